"""The registry: models, datasets, runs and deployments in one database plus an artifact store."""

from modelfab.store.artifacts import ArtifactStore
from modelfab.store.store import Store, new_id, open_store

__all__ = ["ArtifactStore", "Store", "new_id", "open_store"]
