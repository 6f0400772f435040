"""The block cache: metadata, block map, single-flight fills (see storage.py)."""
from .storage import Block, FillError, ObjectMeta, Storage

__all__ = ["Block", "FillError", "ObjectMeta", "Storage"]
