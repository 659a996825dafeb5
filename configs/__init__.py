"""The recipes shipped with alexnet-dali (`train --config NAME`): paper.toml, short-run.toml,
demo.toml. Installed as alexnet_dali.configs; the TOML files are the recipes, this file only
makes the folder a package."""
