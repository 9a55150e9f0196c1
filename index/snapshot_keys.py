"""Keys of index snapshots: one keyring slot per snapshot, replaced at every write."""

from __future__ import annotations

from typing import Callable

from facebank.index.keyring import DataKey, Keyring, snapshot_owner


class SnapshotKeys:
    """Snapshot keys: one keyring slot per snapshot, rotated at every write.
    `read` and `write` are the store's (a catalog read, a unit of work)."""

    def __init__(self, keyring: Keyring, read: Callable, write: Callable) -> None:
        self.keyring = keyring
        self._read = read
        self._write = write

    def current(self, cid: int, segment: str) -> dict | None:
        with self._read() as t:
            return t.get_meta(f"snapshot:{cid}:{segment}")

    def open_key(self, cid: int, segment: str, slot: int) -> DataKey:
        return self.keyring.open(slot, snapshot_owner(cid, segment))

    def new_key(self, cid: int, segment: str) -> DataKey:
        """Durable now; recorded as owned by `commit` (a crash in between leaves an orphan, shredded at start)."""
        return self.keyring.allocate([snapshot_owner(cid, segment)])[0]

    def discard(self, key: DataKey) -> None:
        self.keyring.shred([key.slot])

    def family(self, cid: int, segment: str) -> str | None:
        """The family of the index last snapshotted for this segment, kept when a forget
        drops the snapshot: a start without a snapshot builds that family again where the
        size rules allow either (IndexFactory.family_for's hysteresis)."""
        with self._read() as t:
            return t.get_meta(f"index_family:{cid}:{segment}")

    def commit(self, cid: int, segment: str, key: DataKey, seq: int, family: str) -> bool:
        """Record the new snapshot (and its index's family) and shred the previous key. Refused
        (and the new key shredded) if a forget committed after `seq`: that snapshot may hold it."""
        with self._write() as w:
            if w.get_collection_by_id(cid) is None or seq < w.get_meta(f"forget_at:{cid}:{segment}", 0):
                w.shred_after_commit.append(key.slot)
                return False
            previous = w.get_meta(f"snapshot:{cid}:{segment}")
            w.put_meta(f"snapshot:{cid}:{segment}", {"slot": key.slot, "seq": seq})
            w.put_meta(f"index_family:{cid}:{segment}", family)
            w.put_slot_owner(key.slot, snapshot_owner(cid, segment))
            if previous:
                w.delete_slot_owner(previous["slot"])
                w.shred_after_commit.append(previous["slot"])
        return True
