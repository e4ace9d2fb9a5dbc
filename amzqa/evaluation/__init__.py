"""Offline evaluation: question sets from held-out products, retrieval and generation metrics, reports."""
