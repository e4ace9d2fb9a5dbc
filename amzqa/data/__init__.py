"""Data rules shared by evaluation, training and calibration: generated questions, relevance, the held-out split."""
