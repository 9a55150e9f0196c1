"""Catalog pages a rebuild read are handed back to the kernel, unchanged for the next reader."""

import mmap
from pathlib import Path

import numpy as np
from conftest import synthetic_faces

from facebank.index.records import ENROLLED
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
    assert resident_kb(data_file) > 1500 * 2                 # a plain read keeps them, until the next release
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
