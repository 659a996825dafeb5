"""The loader glue: a shard folder's DALI graphs (`pipelines/`) run per rank and handed to torch,
each shard checked as first read; and the synthetic loaders with the same interface.

Only the modules that build or run a graph load DALI; `synthetic` and `transfer` are plain torch.
"""
