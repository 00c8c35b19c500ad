"""Evaluation of results: metrics, head masks and QC pictures."""
