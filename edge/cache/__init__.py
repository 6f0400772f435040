"""The block cache: metadata, block map, single-flight fills (see storage.py)."""
from .storage import Block, FillError, ObjectMeta, Storage, restore_index, save_index

__all__ = ["Block", "FillError", "ObjectMeta", "Storage", "restore_index", "save_index"]
