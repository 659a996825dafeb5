"""Using a trained (or imported) model: `eval`, `predict`, `export`, and a run's figures."""
