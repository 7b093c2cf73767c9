"""The app's pages; ``streamlit_app.py`` routes to them with ``st.navigation``."""

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

ROUTED = "_digit_studio_routed"  # set by streamlit_app.py whenever the router runs
# One colour per digit, so the same digit looks the same on every page and image.
DIGIT_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4",
                 "#42d4f4", "#f032e6", "#9a6324", "#469990", "#800000"]


def ensure_routed() -> None:
    """Leave Streamlit's legacy ``pages/`` mode if this page was opened first, by its URL.

    A server whose entry script sits beside a ``pages/`` folder starts in that legacy mode
    (a menu made of file names) until ``st.navigation`` has run once, which only happens
    when the router itself runs. Rerunning through the router fixes the menu.
    """
    if PagesManager.uses_pages_directory and not st.session_state.get(ROUTED):
        # Only on a session's first run: a rerun later could swallow a widget event.
        st.session_state[ROUTED] = True
        PagesManager.uses_pages_directory = False
        st.rerun()
