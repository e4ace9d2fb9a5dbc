"""Artifact I/O: atomic writes and folder swaps, every artifact's format tag and file names, library versions."""
