"""The catalog: LMDB as the source of truth.

One LMDB environment holds collections, identities, faces, sealed embeddings,
clusters, API keys and the change log that vector indexes replay. Every write
is one LMDB transaction, so a request that fails half way leaves nothing; the
only code that opens one is the unit of work (unit_of_work.py).

The file is checked before LMDB maps it: a truncated `data.mdb` would
otherwise kill the process with SIGBUS on the first read past its end. LMDB
errors met later (a damaged page) become `DataCorruption` naming the file.

`compact()` rewrites the environment without its free pages (where deleted
records linger) and swaps it in atomically: writes go on while the copy is
made and are replayed into it; writers wait only for that replay and the
swap, readers only for the swap itself.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import shutil
import struct
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import lmdb

from facebank.errors import DataCorruption, FacebankError, FailedPrecondition, ResourceExhausted, disk_full
from facebank.index.catalog_tables import TABLES, RecordMac
from facebank.index.catalog_txn import CatalogTxn
from facebank.index.durable import fsync_dir, private_dir
from facebank.index.faults import delay_point
from facebank.index.resident_pages import release_mapped
from facebank.index.rwlock import RWLock

DEFAULT_MAP_SIZE = 256 * 2**30  # address space only; the file grows with the data
JOURNAL_MAX = 512 * 2**20        # bytes of writes journaled during a compaction copy (see compact)
DATA_FILE = "data.mdb"
_META_MAGIC = 0xBEEFC0DE


class CompactionStopped(Exception):
    """A compaction left at shutdown: the catalog is as it was, the compaction still due."""


class Catalog:
    def __init__(self, path: Path, mac: RecordMac, *, map_size: int = DEFAULT_MAP_SIZE) -> None:
        """Open an existing catalog or create an empty one (the caller decides which is
        allowed: see key_binding.py). The directory lock is taken first."""
        self.path = Path(path)
        private_dir(self.path)
        self._lock_file = acquire_dir_lock(self.path)
        try:
            check_data_file(self.path / DATA_FILE)
            self.map_size = map_size
            self.mac = mac
            self._swap = RWLock()               # shared by every txn, exclusive for a swap
            self._write_gate = threading.Lock()  # held by a writer, and by compaction
            self.listeners: list = []            # called with each committed write's CatalogTxn
            self.commits = 0                     # committed writes so far (see CatalogTxn.began_at)
            self._journal: list | None = None    # rows written while a compaction copies (see compact)
            self._journal_bytes = 0
            self._open_env()
        except BaseException:
            self._lock_file.close()
            raise

    def _open_env(self) -> None:
        try:
            self.env = lmdb.open(
                str(self.path), map_size=self.map_size, max_dbs=len(TABLES) + 2, max_readers=2048, subdir=True,
                lock=True, sync=True, metasync=True, readahead=False, mode=0o600,
            )
            self._dbs = {name: self.env.open_db(name.encode()) for name in TABLES}
        except lmdb.Error as err:
            raise DataCorruption(f"cannot open the catalog {self.path / DATA_FILE} ({err}); restore it from a backup") from None

    @property
    def is_empty(self) -> bool:
        with self.env.begin() as txn:
            return all(txn.stat(db)["entries"] == 0 for db in self._dbs.values())

    def raw_meta(self, name: str) -> bytes | None:
        """A meta row as stored, before its tag can be checked (the binding check needs it)."""
        with self.env.begin() as txn:
            return txn.get(name.encode(), db=self._dbs["meta"])

    @contextmanager
    def read(self, *, tolerant: bool = False) -> Iterator[CatalogTxn]:
        with self._swap.read(), _lmdb_errors(self.path):
            began = self.commits
            with self.env.begin(buffers=False) as txn:
                yield CatalogTxn(txn, self._dbs, self.mac, write=False, began_at=began, tolerant=tolerant)

    @contextmanager
    def lazy_read(self, *, tolerant: bool = False) -> Iterator["LazyTxn"]:
        """Like read(), but a transaction only begins if something is read."""
        lazy = LazyTxn(self, tolerant)
        try:
            yield lazy
        finally:
            lazy.close()

    @contextmanager
    def write(self) -> Iterator[CatalogTxn]:
        """A write transaction: committed when the block ends, aborted if it raises.
        After a commit, every listener sees what the transaction changed.
        Only the unit of work calls this."""
        with self._write_gate, self._swap.read(), _lmdb_errors(self.path):
            with self.env.begin(write=True) as txn:
                view = CatalogTxn(txn, self._dbs, self.mac, write=True, began_at=self.commits)
                if self._journal is not None:
                    view.journal = []
                yield view
                view.flush_counts()
            self._journal_commit(view)
            self.commits += 1
            view.committed_at = self.commits
            for listener in self.listeners:
                listener(view)

    def release_pages(self, *, in_txn: bool = False) -> int:
        """Give back the catalog pages this process has read (they stay in the page cache):
        a rebuild calls this after each chunk it reads. Returns the bytes of mapping advised.
        `in_txn`: called inside one of this catalog's transactions, which already keeps the
        map from being closed or replaced (taking the lock again could wait on a swap that
        waits on that transaction)."""
        if in_txn:
            return release_mapped(self.path / DATA_FILE)
        with self._swap.read():   # the map cannot be closed or replaced meanwhile
            return release_mapped(self.path / DATA_FILE)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())

    def compact(self, stop=lambda: False) -> tuple[int, int]:
        """Rewrite the environment from its live records; returns (bytes before, after).
        `stop()` turning true abandons the copy (CompactionStopped; nothing changed).

        A record-by-record copy, not LMDB's page copy: a live page keeps the
        bytes of records deleted from it in its unused gap, and a page copy
        would carry them over. Writers go on during the copy (at 1M faces it
        takes minutes): the copy reads one snapshot, every write committed
        meanwhile is journaled as stored, and the journal is replayed into the
        copy with writers held only for that replay and the swap (readers only
        for the swap). A row deleted during the copy leaves its bytes in the
        copy's free pages: a forget in that time is compacted again (the
        maintenance worker sees its promise still due). Past JOURNAL_MAX bytes
        of writes the journal is dropped and the copy is made again with
        writers held, as before."""
        before = (self.path / DATA_FILE).stat().st_size
        scratch = scratch_dir(self.path)
        shutil.rmtree(scratch, ignore_errors=True)
        with _lmdb_errors(self.path):
            fresh = self._open_scratch(scratch)
            try:
                with self._write_gate:
                    self._journal, self._journal_bytes = [], 0
                    source = self.env.begin(buffers=False)   # the snapshot the copy reads
                try:
                    for name in TABLES:
                        self._copy_table(source, name, fresh, stop)
                finally:
                    source.abort()
                delay_point("compact:copy", interrupt=stop)
                if stop():
                    raise CompactionStopped
                with self._write_gate:
                    journal, self._journal = self._journal, None
                    if journal is None:   # overflowed: copy again, writers held
                        fresh.close()
                        shutil.rmtree(scratch, ignore_errors=True)
                        fresh = self._open_scratch(scratch)
                        with self.env.begin(buffers=False) as held:
                            for name in TABLES:
                                self._copy_table(held, name, fresh, stop)
                    else:
                        _replay(journal, fresh)
                    fresh.sync(True)
                    fresh.close()
                    with self._swap.write():
                        self.env.close()
                        os.replace(scratch / DATA_FILE, self.path / DATA_FILE)
                        fsync_dir(self.path)
                        self._open_env()
            finally:
                self._journal = None
                fresh.close()
                shutil.rmtree(scratch, ignore_errors=True)
        return before, (self.path / DATA_FILE).stat().st_size

    def _open_scratch(self, scratch: Path) -> lmdb.Environment:
        private_dir(scratch)
        return lmdb.open(str(scratch), map_size=self.map_size, max_dbs=len(TABLES) + 2, subdir=True, lock=True, sync=True, mode=0o600)

    def _copy_table(self, source: lmdb.Transaction, name: str, fresh: lmdb.Environment, stop, batch: int = 50_000) -> None:
        target = fresh.open_db(name.encode())
        items = source.cursor(db=self._dbs[name]).iternext(keys=True, values=True)
        while True:
            if stop():
                raise CompactionStopped
            chunk = list(itertools.islice(items, batch))
            if not chunk:
                return
            with fresh.begin(write=True, db=target) as txn:
                txn.cursor().putmulti(chunk, append=True)
            del chunk
            self.release_pages()   # the batch's pages of the old file, read once (resident_pages.py)

    def _journal_commit(self, view: CatalogTxn) -> None:
        """A committed write's rows, kept for the compaction copying now (writers hold the gate)."""
        if self._journal is None or not view.journal:
            return
        self._journal_bytes += sum(len(k or b"") + len(v or b"") for _, k, v in view.journal)
        if self._journal_bytes > JOURNAL_MAX:
            self._journal = None   # the copy is made again with writers held
        else:
            self._journal.extend(view.journal)

    def close(self) -> None:
        with self._write_gate, self._swap.write():
            self.env.close()
        self._lock_file.close()


def _replay(journal: list[tuple[str, bytes | None, bytes | None]], fresh: lmdb.Environment) -> None:
    """Rows written while the copy was made, in commit order, into the copy (one transaction)."""
    dbs = {name: fresh.open_db(name.encode()) for name in TABLES}
    with fresh.begin(write=True) as txn:
        for table, key, stored in journal:
            if key is None:
                txn.drop(dbs[table], delete=False)
            elif stored is None:
                txn.delete(key, db=dbs[table])
            else:
                txn.put(key, stored, db=dbs[table])


def scratch_dir(path: Path) -> Path:
    """Where compaction builds the new file; one left by a killed compaction is removed at start."""
    return path.with_name(path.name + ".compact")


@contextmanager
def _lmdb_errors(path: Path):
    try:
        yield
    except lmdb.MapFullError:
        raise ResourceExhausted(f"the catalog {path} reached its map size; raise it or compact") from None
    except lmdb.DiskError as err:
        raise disk_full(path.parent, err) from None
    except (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError, lmdb.BadValsizeError) as err:
        raise DataCorruption(f"the catalog {path / DATA_FILE} is damaged ({err}); run `facebank check` or restore it from a backup") from None
    except FacebankError:
        raise
    except lmdb.Error as err:
        if "No space" in str(err) or "Input/output" in str(err):  # a full disk shows as EIO at commit too
            raise disk_full(path.parent, err) from None
        raise
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(path.parent, err.strerror) from None
        raise


def check_data_file(path: Path) -> None:
    """Refuse a data file LMDB would crash on: not an LMDB file, or shorter than its
    own meta pages say (a truncated copy: mapping it would end in SIGBUS)."""
    if not path.exists():
        return
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(2 * 65536)
    if size == 0:
        raise DataCorruption(f"the catalog {path} is empty (0 bytes); restore it from a backup, or remove it to start a new catalog")
    metas = []
    psize = 0
    for page in (0, 1):
        off = page * (psize or 4096)
        if len(head) < off + 152:
            break
        magic, _version = struct.unpack_from("<II", head, off + 16)
        if magic != _META_MAGIC:
            continue
        psize = psize or struct.unpack_from("<I", head, off + 40)[0]
        last_pg, txnid = struct.unpack_from("<QQ", head, off + 136)
        metas.append((txnid, last_pg))
    if not metas or psize not in (4096, 8192, 16384, 32768, 65536):
        raise DataCorruption(f"{path} is not an LMDB catalog (bad header); restore it from a backup")
    _, last_pg = max(metas)
    need = (last_pg + 1) * psize
    if size < need:
        raise DataCorruption(
            f"the catalog {path} is truncated ({size:,} bytes; its own header needs {need:,}); restore it from a backup"
        )


class LazyTxn:
    """A read transaction begun on first use (most searches never need one)."""

    def __init__(self, catalog: Catalog, tolerant: bool) -> None:
        self._catalog = catalog
        self._tolerant = tolerant
        self._context = None
        self._txn: CatalogTxn | None = None

    def __getattr__(self, name: str):
        if self._txn is None:
            self._context = self._catalog.read(tolerant=self._tolerant)
            self._txn = self._context.__enter__()
        return getattr(self._txn, name)

    def damaged_rows(self) -> list:
        return self._txn.damaged if self._txn is not None else []

    def close(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = self._txn = None


def acquire_dir_lock(path: Path, what: str = "catalog"):
    fd = os.open(path / "facebank.lock", os.O_RDWR | os.O_CREAT, 0o600)
    handle = os.fdopen(fd, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FailedPrecondition(
            f"another facebank process is using the {what} in {path}; stop it first (or talk to it through its API)"
        ) from None
    return handle
