"""Keys of index snapshots: one keyring slot per snapshot, replaced at every write."""

from __future__ import annotations

from typing import TYPE_CHECKING

from facebank.index.keyring import DataKey, snapshot_owner

if TYPE_CHECKING:
    from facebank.index.store import FaceStore


class SnapshotKeys:
    """Snapshot keys: one keyring slot per snapshot, rotated at every write."""

    def __init__(self, store: FaceStore) -> None:
        self.store = store

    def current(self, cid: int, segment: str) -> dict | None:
        with self.store.read() as t:
            return t.get_meta(f"snapshot:{cid}:{segment}")

    def open_key(self, cid: int, segment: str, slot: int) -> DataKey:
        return self.store.keyring.open(slot, snapshot_owner(cid, segment))

    def new_key(self, cid: int, segment: str) -> DataKey:
        return self.store.keyring.allocate([snapshot_owner(cid, segment)])[0]

    def discard(self, key: DataKey) -> None:
        self.store.keyring.shred([key.slot])

    def commit(self, cid: int, segment: str, key: DataKey, seq: int) -> bool:
        """Record the new snapshot and shred the previous key. Refused (and the new
        key shredded) if a forget happened after `seq`: that snapshot may hold it."""
        with self.store.uow.write() as t:
            if t.get_collection_by_id(cid) is None or seq < t.get_meta(f"forget_at:{cid}", 0):
                stale = True
            else:
                stale = False
                previous = t.get_meta(f"snapshot:{cid}:{segment}")
                t.put_meta(f"snapshot:{cid}:{segment}", {"slot": key.slot, "seq": seq})
                t.put_slot_owner(key.slot, snapshot_owner(cid, segment))
                if previous:
                    t.delete_slot_owner(previous["slot"])
        if stale:
            self.discard(key)
            return False
        if previous:
            self.store.keyring.shred([previous["slot"]])
        return True
