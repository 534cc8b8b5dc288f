"""SF 311 dashboard page: charts."""

from sf311.dashboard.ui import charts_page
from sf311.settings import load_settings

charts_page(load_settings())
