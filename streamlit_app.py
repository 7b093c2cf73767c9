"""Digit Studio: detect and read house-number digits. Run with ``streamlit run streamlit_app.py``."""

import streamlit as st

from pages import keep_form_values

st.set_page_config(page_title="Digit Studio", page_icon=":1234:", layout="wide")

st.session_state["_digit_studio_routed"] = True  # see pages.ensure_routed (pages.ROUTED)
keep_form_values(st.session_state)
navigation = st.navigation([
    st.Page("pages/detect.py", title="Detect", icon=":material/center_focus_strong:", default=True),
    st.Page("pages/schedulers.py", title="Schedulers", icon=":material/show_chart:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
    st.Page("pages/data.py", title="Data", icon=":material/dataset:"),
])
navigation.run()
