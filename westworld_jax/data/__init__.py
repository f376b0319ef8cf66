"""Data: physics corpus generation, on-disk shards, grain window pipeline, imports."""
