"""The Streamlit search-and-answer page (a thin shell over amzqa)."""
