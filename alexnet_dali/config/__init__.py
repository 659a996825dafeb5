"""Configuration, shared by every stage: the frozen dataclasses a run is described by, their
ranges and cross-field rules, and the one place that builds them from TOML, JSON, --set and
flags. Imports nothing of the project but `errors`."""
