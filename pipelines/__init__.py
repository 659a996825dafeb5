"""DALI graphs only: shards -> augmented batches (train, eval, ten-crop)."""
