"""Outcome evaluation (issue 19): per-person outcome values from measures with `value:` (values.py)."""
