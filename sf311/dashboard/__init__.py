"""The Streamlit dashboard's library: filters, SQL, maps, charts, API client and pages."""
