"""Catalog pages a rebuild read are handed back to the kernel, unchanged for the next reader."""

import mmap
import weakref
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from conftest import open_store, synthetic_faces

from facebank.index.records import ENROLLED, IndexSettings
from facebank.index.resident_pages import release_mapped


def resident_kb(path: Path) -> int:
    """Rss of this process's mappings of `path` (/proc/self/smaps)."""
    target, total, inside = str(path.resolve()), 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            inside = len(head) == 6 and head[5] == target
        elif inside and head[0] == "Rss:":
            total += int(head[1])
    return total


def test_a_rebuild_leaves_no_catalog_page_resident_and_reads_the_same_after(engine):
    synthetic_faces(engine, "default", 1500)
    store = engine.store
    data_file = store.catalog.path / "data.mdb"
    with store.read() as t:
        cid = t.get_collection("default").id
    _, source = store._segment_source(cid, ENROLLED)
    ids, before = source.vectors_of(source.ids)   # what a rebuild reads (one chunk here)
    assert len(ids) == 1500
    assert resident_kb(data_file) < 64, "each chunk's pages are handed back once read"
    with store.read() as t:
        _, again = store.open_vectors(t, ids, 512)
    with store.catalog.env.begin() as txn:
        leaf_kb = txn.stat(store.catalog._dbs["embeddings"])["leaf_pages"] * 4
    assert resident_kb(data_file) >= leaf_kb                 # a plain read keeps every page it read, until the next release
    assert store.catalog.release_pages() > 0 and resident_kb(data_file) < 64
    with store.read() as t:
        _, after = store.open_vectors(t, ids, 512)
    assert np.array_equal(before, again) and np.array_equal(before, after)


def test_a_writable_mapping_is_never_advised(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"\0" * 8192)
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 8192, access=mmap.ACCESS_WRITE) as m:
        m[:5] = b"kept!"
        assert release_mapped(path) == 0
        assert m[:5] == b"kept!"


def test_a_rebuild_frees_the_index_it_replaced_before_the_new_one_is_snapshotted(tmp_path, monkeypatch):
    """The maintenance loop held every segment it started with, so the replaced index
    (2 GB at 1M faces) stayed alive beside the new one while the snapshot was written."""
    store = open_store(tmp_path / "data")
    try:
        store.create_collection("default", "scrfd500m-w600kmbf", 512, 0.4, IndexSettings())
        synthetic_faces(SimpleNamespace(store=store), "default", 300)
        segment = store.segment(store.collection("default").id)
        segment.retrain_pending = True
        replaced = weakref.ref(segment.index)
        del segment
        alive_when_snapshotted = []
        real = store.segments.snapshot

        def observed(segment, *args, **kwargs):
            if segment.index is not replaced():   # not the snapshot of the old index written before its retrain
                alive_when_snapshotted.append(replaced() is not None)
            return real(segment, *args, **kwargs)

        monkeypatch.setattr(store.segments, "snapshot", observed)
        store.maintenance.clean_now()
        assert alive_when_snapshotted and not any(alive_when_snapshotted)
        assert store.segment(store.collection("default").id).index is not None and replaced() is None
    finally:
        store.close()


def test_a_compaction_hands_back_the_old_catalog_pages_it_copied(engine):
    """The copy reads every record of the old file through LMDB's map (2.7 GB at 1M faces):
    each batch's pages are handed back once written to the copy, as a rebuild's are."""
    synthetic_faces(engine, "default", 1500)
    catalog = engine.store.catalog
    data_file = catalog.path / "data.mdb"
    with catalog.env.begin() as txn:
        leaf_kb = txn.stat(catalog._dbs["embeddings"])["leaf_pages"] * 4
    catalog.release_pages()
    resident_while_copying = []

    def probe() -> bool:   # asked before each batch of the copy
        resident_while_copying.append(resident_kb(data_file))
        return False

    before, after = catalog.compact(stop=probe)
    assert len(resident_while_copying) > 2 and leaf_kb > 1000
    # A batch's pages stay only until it is written (here each table is one batch); what
    # remains is a table's first path, read when its cursor opens: a few of the kernel's
    # 64 KB fault-arounds, however large the table (5 MB here before the pages were handed back).
    assert max(resident_while_copying) <= 512, (resident_while_copying, leaf_kb)
    cid = engine.store.collection("default").id
    _, source = engine.store._segment_source(cid, ENROLLED)
    assert len(source.vectors_of(source.ids)[0]) == 1500   # the copy reads the same
