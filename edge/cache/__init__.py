"""The block cache: metadata, block map, single-flight fills (see storage.py); the same over
the arena and index all workers share (shared.py)."""
from .shared import SharedArena, SharedBlock, SharedStorage
from .storage import Block, FillError, ObjectMeta, Storage, restore_index, save_index

__all__ = ["Block", "FillError", "ObjectMeta", "SharedArena", "SharedBlock", "SharedStorage",
           "Storage", "restore_index", "save_index"]
