"""The catalog: LMDB as the source of truth.

One LMDB environment holds collections, identities, faces, sealed embeddings,
clusters, API keys and the change log that vector indexes replay. Every write
is one LMDB transaction, so a request that fails half way leaves nothing.

`compact()` rewrites the environment without its free pages (where deleted
records linger) and swaps it in atomically: writers are held off while the
copy is made, readers only for the swap itself.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import lmdb

from facebank.errors import FailedPrecondition
from facebank.index.catalog_tables import COUNTED, DERIVED_VERSION, TABLES, u64
from facebank.index.catalog_txn import CatalogTxn
from facebank.index.durable import fsync_dir
from facebank.index.records import ClusterRecord, loads
from facebank.index.rwlock import RWLock

DEFAULT_MAP_SIZE = 256 * 2**30  # address space only; the file grows with the data


class Catalog:
    def __init__(self, path: Path, *, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_file = _acquire_dir_lock(self.path)
        self.map_size = map_size
        self._swap = RWLock()               # shared by every txn, exclusive for a swap
        self._write_gate = threading.Lock()  # held by a writer, and by compaction
        self.listeners: list = []            # called with each committed write's CatalogTxn
        self._open_env()
        with self.write() as t:
            if t.get_meta("derived_version") != DERIVED_VERSION:
                rebuild_derived(t)
                t.put_meta("derived_version", DERIVED_VERSION)

    def _open_env(self) -> None:
        self.env = lmdb.open(
            str(self.path),
            map_size=self.map_size,
            max_dbs=len(TABLES) + 2,
            max_readers=2048,
            subdir=True,
            lock=True,
            sync=True,
            metasync=True,
            readahead=False,
        )
        self._dbs = {name: self.env.open_db(name.encode()) for name in TABLES}

    @contextmanager
    def read(self) -> Iterator[CatalogTxn]:
        with self._swap.read():
            with self.env.begin(buffers=False) as txn:
                yield CatalogTxn(txn, self._dbs, write=False)

    @contextmanager
    def lazy_read(self) -> Iterator["LazyTxn"]:
        """Like read(), but a transaction only begins if something is read."""
        lazy = LazyTxn(self)
        try:
            yield lazy
        finally:
            lazy.close()

    @contextmanager
    def write(self) -> Iterator[CatalogTxn]:
        """A write transaction: committed when the block ends, aborted if it raises.
        After a commit, every listener sees what the transaction changed."""
        with self._write_gate, self._swap.read():
            with self.env.begin(write=True) as txn:
                view = CatalogTxn(txn, self._dbs, write=True)
                yield view
                view.flush_counts()
            for listener in self.listeners:
                listener(view)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())

    def compact(self) -> tuple[int, int]:
        """Rewrite the environment from its live records; returns (bytes before, after).

        A record-by-record copy, not LMDB's page copy: a live page keeps the
        bytes of records deleted from it in its unused gap, and a page copy
        would carry them over. Writers wait during the copy; readers only
        during the swap."""
        before = (self.path / "data.mdb").stat().st_size
        scratch = self.path.with_name(self.path.name + ".compact")
        if scratch.exists():
            shutil.rmtree(scratch)
        with self._write_gate:
            fresh = lmdb.open(str(scratch), map_size=self.map_size, max_dbs=len(TABLES) + 2, subdir=True, lock=True, sync=True)
            try:
                for name in TABLES:
                    self._copy_table(name, fresh)
                fresh.sync(True)
            finally:
                fresh.close()
            with self._swap.write():
                self.env.close()
                os.replace(scratch / "data.mdb", self.path / "data.mdb")
                fsync_dir(self.path)
                self._open_env()
        shutil.rmtree(scratch, ignore_errors=True)
        return before, (self.path / "data.mdb").stat().st_size

    def _copy_table(self, name: str, fresh: lmdb.Environment, batch: int = 50_000) -> None:
        target = fresh.open_db(name.encode())
        with self.env.begin(db=self._dbs[name], buffers=False) as source:
            items = source.cursor().iternext(keys=True, values=True)
            while True:
                chunk = list(itertools.islice(items, batch))
                if not chunk:
                    return
                with fresh.begin(write=True, db=target) as txn:
                    txn.cursor().putmulti(chunk, append=True)

    def close(self) -> None:
        with self._write_gate, self._swap.write():
            self.env.close()
        self._lock_file.close()


def rebuild_derived(t: CatalogTxn) -> None:
    """Recompute the derived tables (counts, identity_clusters) from the records:
    a catalog written before they existed, or by an older version. One scan, at open."""
    for table in ("counts", "identity_clusters"):
        t.txn.drop(t.db[table], delete=False)
    for table, width in COUNTED.items():
        groups: dict[bytes, int] = {}
        for key in t.txn.cursor(db=t.db[table]).iternext(keys=True, values=False):
            groups[key[:width]] = groups.get(key[:width], 0) + 1
        for group, n in groups.items():
            t.txn.put(CatalogTxn.count_key(table, group), u64(n), db=t.db["counts"])
    for value in t.txn.cursor(db=t.db["clusters"]).iternext(keys=False, values=True):
        rec = loads(ClusterRecord, value)
        if rec.iid:
            t.txn.put(u64(rec.iid) + u64(rec.cluster_id), b"", db=t.db["identity_clusters"])


class LazyTxn:
    """A read transaction begun on first use (most searches never need one)."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._context = None
        self._txn: CatalogTxn | None = None

    def __getattr__(self, name: str):
        if self._txn is None:
            self._context = self._catalog.read()
            self._txn = self._context.__enter__()
        return getattr(self._txn, name)

    def close(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = self._txn = None


def _acquire_dir_lock(path: Path):
    handle = open(path / "facebank.lock", "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FailedPrecondition(
            f"another facebank process is using {path.parent}; stop it first "
            "(or talk to it through its API)"
        ) from None
    return handle
