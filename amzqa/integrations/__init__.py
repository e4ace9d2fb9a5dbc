"""Adapters that make amzqa components usable inside other frameworks (llama-index)."""
