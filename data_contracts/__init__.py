"""great-expectations data contracts for the pipeline's datasets (see runner.py)."""
