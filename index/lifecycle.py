"""Starting a store: open, recover, load the indexes, start the upkeep.

The engine calls `start_store`; tests and tools that need a working store
call it too, so every start goes through the same steps in the same order.
"""

from __future__ import annotations

from pathlib import Path

from facebank.index.catalog import DEFAULT_MAP_SIZE
from facebank.index.maintenance import Maintenance
from facebank.index.recovery import recover
from facebank.index.store import FaceStore


def start_store(data_dir: Path, *, keys_dir: Path | None = None, device: str = "cpu", background: bool = True,
                map_size: int = DEFAULT_MAP_SIZE, vectors: str | None = None) -> tuple[FaceStore, Maintenance]:
    store = FaceStore(data_dir, keys_dir=keys_dir, device=device, map_size=map_size, vectors=vectors)
    try:
        recover(store)
        store.load_indexes()
        store.start_owner_map()   # searches are answered meanwhile (face_owners.py)
        maintenance = Maintenance(store)
    except BaseException:
        store.close()
        raise
    if background:
        store.uow.start_applier()
        maintenance.start()
    return store, maintenance


def stop_store(store: FaceStore, maintenance: Maintenance) -> None:
    maintenance.stop()
    store.uow.stop_applier()
    store.close()
