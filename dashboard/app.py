"""SF 311 dashboard (`sf311 dashboard` runs `streamlit run dashboard/app.py`): the page config
and the navigation; each page is one library call."""

import streamlit as st

from sf311.dashboard.ui import overview_page
from sf311.settings import load_settings

st.set_page_config(page_title="SF 311", layout="wide")
page = st.navigation(
    [
        st.Page(
            lambda: overview_page(load_settings()),
            title="Overview",
            url_path="overview",
            default=True,
        ),
        st.Page("views/map.py", title="Map", url_path="map"),
        st.Page("views/charts.py", title="Charts", url_path="charts"),
        st.Page("views/backlog.py", title="Backlog", url_path="backlog"),
        st.Page("views/cases.py", title="Cases", url_path="cases"),
        st.Page("views/predict.py", title="Predict", url_path="predict"),
    ]
)
page.run()
