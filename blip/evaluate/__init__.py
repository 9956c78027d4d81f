"""Evaluation: caption metrics (pycocoevalcap) and image-text retrieval (ITC top-k + ITM re-rank)."""
