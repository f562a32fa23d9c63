"""Experiment configs: data, not code. Each file defines `get_config(arg)` and `PRESETS`."""
