"""Answering: the QA pipeline, the citation check that decides what is shown, and Portuguese in and out."""
