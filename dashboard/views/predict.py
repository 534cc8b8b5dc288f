"""SF 311 dashboard page: prediction form."""

from sf311.dashboard.ui import predict_page
from sf311.settings import load_settings

predict_page(load_settings())
