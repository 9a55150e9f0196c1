"""In-memory views of the catalog for the search hot path, kept in step with
every committed write (the catalog calls them after each commit).

Search turns face ids into identities for every hit; reading LMDB and decoding
JSON for each would cost more than the vector search itself.
"""

from __future__ import annotations

import threading

from facebank.index.catalog_txn import CatalogTxn
from facebank.index.face_owners import FaceOwners
from facebank.index.records import IdentityRecord


class IdentityCache:
    """A bounded cache of identity records by iid, dropped as soon as one changes.
    Reads take no lock (a dict lookup is atomic); eviction is first in, first out.

    A record is cached only if the transaction it was read in began after the
    last commit that changed an identity (`CatalogTxn.began_at`): a read begun
    before a rename committed may hold the old name, and must not keep it."""

    def __init__(self, size: int = 200_000) -> None:
        self._items: dict[int, IdentityRecord] = {}
        self._size = size
        self._lock = threading.Lock()
        self._last_change = 0  # commit count of the last commit that changed an identity

    def get(self, iid: int, t: CatalogTxn) -> IdentityRecord | None:
        rec = self._items.get(iid)
        if rec is not None:
            return rec
        rec = t.get_identity_by_iid(iid)
        if rec is not None:
            with self._lock:
                if t.began_at >= self._last_change:
                    if len(self._items) >= self._size:
                        self._items.pop(next(iter(self._items)))
                    self._items[iid] = rec
        return rec

    def get_many(self, iids, t: CatalogTxn) -> dict[int, IdentityRecord]:
        """The records of these iids that exist (a batch's answer has hundreds)."""
        items = self._items
        found = {iid: rec for iid in iids if (rec := items.get(iid)) is not None}
        for iid in [iid for iid in iids if iid not in found]:
            rec = self.get(iid, t)
            if rec is not None:
                found[iid] = rec
        return found

    def forget(self, iids, committed_at: int) -> None:
        if iids:
            with self._lock:
                self._last_change = max(self._last_change, committed_at)
                for iid in iids:
                    self._items.pop(iid, None)


class MetadataView:
    """Which identities carry a metadata key=value, per collection: read from the
    (authenticated) metadata index once at start and kept in step by every commit,
    so a filtered search reads nothing from the catalog."""

    def __init__(self) -> None:
        self._iids: dict[tuple[int, bytes], set[int]] = {}
        self._lock = threading.Lock()

    def load(self, rows) -> None:
        with self._lock:
            for cid, pair, iid in rows:
                self._iids.setdefault((cid, pair), set()).add(iid)

    def update(self, changes) -> None:
        if changes:
            with self._lock:
                for cid, pair, iid, added in changes:
                    if added:
                        self._iids.setdefault((cid, pair), set()).add(iid)
                    else:
                        group = self._iids.get((cid, pair))
                        if group is not None:
                            group.discard(iid)
                            if not group:
                                del self._iids[(cid, pair)]

    def iids(self, cid: int, pairs: list[bytes]) -> set[int]:
        """Identities of collection `cid` carrying every one of these key=value pairs."""
        with self._lock:
            groups = [self._iids.get((cid, pair), set()) for pair in pairs]
            return set.intersection(*groups) if groups else set()


def listen(owners: FaceOwners, identities: IdentityCache, metadata: MetadataView):
    def on_commit(t: CatalogTxn) -> None:
        owners.update(t.face_owners_changed)
        identities.forget(t.identities_changed, t.committed_at)
        metadata.update(t.metadata_changed)

    return on_commit
