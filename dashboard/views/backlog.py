"""SF 311 dashboard page: open backlog by status (on time, at risk, overdue)."""

from sf311.dashboard.ui import backlog_page
from sf311.settings import load_settings

backlog_page(load_settings())
