"""Benchmarks that print measurements: the DALI train pipeline, the colour noise, training."""
