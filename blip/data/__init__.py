"""Data layer: the built-in world, ingestion, shards and manifests, transforms, loaders."""
