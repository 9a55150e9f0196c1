"""Catalog pages a rebuild read are handed back to the kernel, unchanged for the next reader."""

import mmap
import weakref
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
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


def test_a_server_that_enrolled_its_faces_hands_back_the_heap_its_writes_freed(tmp_path, embedder):
    """Issue 23: enrolling into an IVF frees about 9 KB of temporaries a face into glibc's
    arenas, which reuse the holes only in part: loaded with the upkeep as a server does,
    1M faces left the process at 1.4x the anonymous memory of the same data started from
    its snapshot, the 10M load 3.6 GB above. The upkeep worker now trims the heap after
    writes (at most every HEAP_TRIM_S while they come, and once after the last): 50,000
    faces enrolled in bulk writes of 2,500 with the worker running as in `facebank serve`,
    once the worker has passed after the last write (a few seconds), a trim finds under 16 MB to return (85,436 KB before; 0-4 KB
    after), and an idle server does not trim again."""
    import time

    from conftest import anonymous_kb, make_config

    from facebank.index import identities
    from facebank.index.resident_pages import trim_heap
    from facebank.index.sealed_faces import NewFace
    from facebank.server.engine import Engine
    from facebank.v1 import facebank_pb2 as pb

    if not trim_heap():
        pytest.skip("no malloc_trim here (not glibc)")
    engine = Engine(make_config(tmp_path / "data", background=True), embedder=embedder)
    try:
        engine.collections.create_collection(pb.CreateCollectionRequest(name="big", index=pb.IndexOptions(kind=pb.INDEX_KIND_IVF, nprobe=8)))
        rng = np.random.default_rng(5)
        for chunk in range(20):
            vectors = rng.standard_normal((2500, 512)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            entries = [(f"p{chunk}-{i}", "", {}, [NewFace([0, 0, 1, 1], [[0, 0]] * 5, 0.9, {}, vectors[5 * i + j],
                                                          f"{chunk:08x}{i * 5 + j:056x}", "", "scrfd500m-w600kmbf") for j in range(5)])
                       for i in range(500)]
            identities.enroll_many(engine.store, "big", entries)
            if chunk == 0:
                engine.maintenance.clean_now()   # the IVF trained on the first 2,500; the rest are added to it
        deadline = time.monotonic() + 30   # the worker's passes after the last write (a few seconds when idle)
        while getattr(engine.maintenance, "_commits_trimmed", -1) != engine.store.catalog.commits and time.monotonic() < deadline:
            time.sleep(0.25)
        time.sleep(0.5)
        segment = engine.store.segments.get(engine.store.collection("big").id, "enrolled")
        assert segment.index.kind == "ivf" and len(segment.index) == 50_000
        before = anonymous_kb()
        trim_heap()
        returned_kb = before - anonymous_kb()
        assert returned_kb < 16 * 1024, f"a trim found {returned_kb} KB of freed heap the upkeep left resident"
        assert not engine.maintenance.return_free_heap(), "nothing committed since: an idle server does not trim again"
    finally:
        engine.close()


def _enrolled_one_by_one(engine, n: int) -> None:
    """n faces of n identities in bulk writes, so that each table's rows lie among the
    other tables' pages as a server's enrollments leave them."""
    from facebank.index import identities
    from facebank.index.sealed_faces import NewFace

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((n, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for start in range(0, n, 500):
        identities.enroll_many(engine.store, "default", [
            (f"p{i}", "", {}, [NewFace([0, 0, 1, 1], [[0, 0]] * 5, 0.9, {}, vectors[i], f"{i:064x}", "", "scrfd500m-w600kmbf")])
            for i in range(start, min(n, start + 500))])


def _resident_at_each_release(catalog, monkeypatch) -> list[int]:
    """The catalog's resident KB just before each time it hands its pages back."""
    seen, release = [], catalog.release_pages

    def watched(**kw) -> int:
        seen.append(resident_kb(catalog.path / "data.mdb"))
        return release(**kw)

    monkeypatch.setattr(catalog, "release_pages", watched)
    return seen


def test_faces_drawn_from_all_over_the_catalog_are_read_a_few_at_a_time(engine, monkeypatch):
    """Issue 23: a retrain reads its training sample (32,768 faces a fetch) from all over
    the catalog; each face touches its own page and the kernel maps the cached pages
    around each one it faults in, so at 1M faces a fetch held 0.3-1 GB of catalog pages
    resident (RSS 1.50x the steady during a retrain) until it handed them back. Now
    FETCH_SPREAD faces a read (64 here), each read's pages handed back: at most 8 MB
    resident at any release (1.6 MB measured; 29,116 KB before, the whole catalog,
    when all 2,000 were one read), and the same vectors as one read."""
    from facebank.index import vector_source

    _enrolled_one_by_one(engine, 10_000)
    store = engine.store
    _, source = store._segment_source(store.collection("default").id, ENROLLED)
    rows = np.sort(np.random.default_rng(4).choice(len(source), 2000, replace=False))
    whole_ids, whole = source.take(rows)
    monkeypatch.setattr(vector_source, "FETCH_SPREAD", 64, raising=False)
    store.catalog.release_pages()
    seen = _resident_at_each_release(store.catalog, monkeypatch)
    ids, vectors = source.take(rows)
    assert np.array_equal(ids, whole_ids) and np.array_equal(vectors, whole) and len(ids) == 2000
    assert len(seen) >= 2000 // 64 and max(seen) <= 8 * 1024, f"resident catalog pages at each release (KB): {seen}"


def test_a_start_hands_back_the_catalog_pages_its_owner_map_read(tmp_path, embedder):
    """Issue 23: a start reads every face's owner row (the owner map, in the background);
    in a catalog its enrollments wrote, those rows lie among the embeddings' pages, and
    the kernel maps the cached pages around each one read: a freshly loaded 1M-face
    catalog stayed 1 GB resident in a server started from its snapshot (300k: 321 MB).
    Each batch's pages are handed back now: under 1 MB left once the map is loaded
    (0 measured; 29,180 KB before, the whole catalog of 10,000 faces)."""
    from conftest import make_config

    from facebank.server.engine import Engine

    engine = Engine(make_config(tmp_path / "data"), embedder=embedder)
    try:
        _enrolled_one_by_one(engine, 10_000)
    finally:
        engine.close()
    engine = Engine(make_config(tmp_path / "data"), embedder=embedder)
    try:
        assert engine.store.owners.loaded.wait(30)
        resident = resident_kb(engine.store.catalog.path / "data.mdb")
        assert resident < 1024, f"{resident} KB of the catalog left resident by the start"
    finally:
        engine.close()


def test_listing_which_faces_a_rebuild_covers_hands_back_the_pages_as_it_goes(engine, monkeypatch):
    """Issue 23: a rebuild first lists its segment's faces (one row each, among the
    embeddings' pages of a catalog its enrollments wrote), and the kernel maps the cached
    pages around each one read: at 1M the list held 1 GB of catalog pages for the 3.5 s
    it took, the RSS peak of the retrain (1.43-1.44x the steady, `...-scale1m-heap-pages-cpu2`
    and `...-segment-pages-cpu2`). Now the pages are handed back every LIST_BLOCK ids
    (500 here): at most 4 MB resident at any release, none left after (10,816 KB before, of
    the 29 MB catalog of 10,000 faces, when the list was read in one go)."""
    from facebank.index import vector_source

    _enrolled_one_by_one(engine, 10_000)
    store = engine.store
    store.catalog.release_pages()
    monkeypatch.setattr(vector_source, "LIST_BLOCK", 500, raising=False)
    seen = _resident_at_each_release(store.catalog, monkeypatch)
    _, source = store._segment_source(store.collection("default").id, ENROLLED)
    assert np.array_equal(source.ids, np.arange(source.ids[0], source.ids[0] + 10_000))
    left = resident_kb(store.catalog.path / "data.mdb")
    assert len(seen) >= 10_000 // 500 and max(seen) <= 4 * 1024 and left < 256, f"resident KB at each release {seen}, after {left}"


def test_a_server_that_enrolled_its_faces_hands_back_the_catalog_pages_its_writes_read(tmp_path, embedder):
    """Issue 23: each write reads the catalog's pages where its rows go (every table's
    B-tree, down to the leaf), and those pages stayed mapped in the process that made
    them: at 5M faces loaded as a server loads them, 0.61 GB of the catalog against a
    start's 0.13 GB, the loading process settled at 1.31x the RSS of a start from its
    snapshot (`committed-2026-12-07-scale5m-cpu2`). The upkeep hands them back with the
    heap, once its pass after the last write is done: under 1 MB left of 10,000 faces
    enrolled in bulk writes (the pages stay in the page cache, and what is read after
    reads the same)."""
    import time

    from conftest import make_config

    from facebank.server.engine import Engine

    engine = Engine(make_config(tmp_path / "data", background=True), embedder=embedder)
    try:
        _enrolled_one_by_one(engine, 10_000)
        deadline = time.monotonic() + 30   # the worker's pass after the last write (a few seconds when idle)
        while getattr(engine.maintenance, "_commits_trimmed", -1) != engine.store.catalog.commits and time.monotonic() < deadline:
            time.sleep(0.25)
        time.sleep(0.5)
        left = resident_kb(engine.store.catalog.path / "data.mdb")
        assert left < 1024, f"{left} KB of the catalog left resident by the writes"
        store = engine.store
        with store.read() as t:
            ids, vectors = store.open_vectors(t, np.arange(1, 11, dtype=np.int64), 512)
        assert len(ids) == 10 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    finally:
        engine.close()
