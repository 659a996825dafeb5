"""Offline tools (CPU, NumPy/Pillow): source images -> shards; shards -> pca.json."""
