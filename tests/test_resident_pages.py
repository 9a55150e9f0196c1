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
            alive_when_snapshotted.append(replaced() is not None)
            return real(segment, *args, **kwargs)

        monkeypatch.setattr(store.segments, "snapshot", observed)
        store.maintenance.clean_now()
        assert alive_when_snapshotted and not any(alive_when_snapshotted)
        assert store.segment(store.collection("default").id).index is not None and replaced() is None
    finally:
        store.close()
