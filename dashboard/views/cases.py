"""SF 311 dashboard page: newest cases and CSV download."""

from sf311.dashboard.ui import cases_page
from sf311.settings import load_settings

cases_page(load_settings())
