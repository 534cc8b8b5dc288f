"""SF 311 dashboard page: hotspots map."""

from sf311.dashboard.ui import map_page
from sf311.settings import load_settings

map_page(load_settings())
