"""Prefect flows over the DVC pipeline (no ML logic here: every stage runs through DVC)."""
