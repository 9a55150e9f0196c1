"""An IVF's training sample held once (index/ivf_training.py): rows drawn as before without
listing the others, rows dropped in place, the 8-bit kind's sample kept as its codes and
k-means run on them decoded block by block, each against the plain computation."""

from __future__ import annotations

import sys

import faiss
import numpy as np
import pytest

from conftest import anonymous_peak
from facebank.index import ivf_training
from facebank.index.ivf_calibration import RELEVANT_SCORE, relevant_in_sample
from facebank.index.ivf_training import Sq8Codec, decoded_blocks, drop_rows, sample_rows, take_sample, train_lists
from facebank.index.vector_source import VectorSource
from facebank.index.vectors import IvfIndex
from test_ivf_growth import unit_vectors


@pytest.mark.parametrize("n, held, size", [(1000, [], 300), (1000, [0, 1, 2, 500, 999], 995), (50_000, list(range(0, 50_000, 97)), 4096),
                                           (10, [3], 9), (7, [], 0)])
def test_sample_rows_draw_what_choosing_among_the_other_rows_draws(n, held, size):
    held = np.asarray(held, np.int64)
    want = np.sort(np.random.default_rng(4).choice(np.setdiff1d(np.arange(n), held), size=size, replace=False))
    got = sample_rows(np.random.default_rng(4), n, held, size)
    assert np.array_equal(got, want) and not np.isin(got, held).any()


@pytest.mark.parametrize("block", [1, 3, 64, 10_000])
def test_rows_are_dropped_in_place_as_a_mask_drops_them(block, monkeypatch):
    monkeypatch.setattr(ivf_training, "DECODE_BLOCK", block)
    rng = np.random.default_rng(block)
    for n in (0, 1, 200, 1000):
        sample = rng.integers(0, 255, (n, 16), dtype=np.uint8)
        ids = np.arange(n, dtype=np.int64) * 5
        drop = np.unique(rng.integers(0, max(n, 1), n // 3)) if n else np.zeros(0, np.int64)
        keep = ~np.isin(np.arange(n), drop)
        want_ids, want = ids[keep], sample[keep].copy()
        got_ids, got = drop_rows(ids, sample, drop)
        assert np.array_equal(got_ids, want_ids) and np.array_equal(got, want)
        assert not n or np.shares_memory(got, sample)  # moved within its own buffer, not copied


def test_the_codes_decode_to_what_an_ivf_sq8_index_stores():
    x = unit_vectors(500, 32, 2)
    codec = Sq8Codec(32)
    index = IvfIndex._untrained(32, 4, "ivf_sq8", 0)
    train_lists(index, codec.encode(x), codec)
    index.add_with_ids(x, np.arange(500, dtype=np.int64))
    index.make_direct_map()
    assert np.array_equal(codec.decode(codec.encode(x)), index.reconstruct_n(0, 500))


@pytest.mark.parametrize("block", [1000, 32_768])
def test_kmeans_on_the_codes_finds_the_centroids_of_the_decoded_sample(block, monkeypatch):
    """The 8-bit sample, decoded block by block inside FAISS's k-means, trains the centroids
    that FAISS's IVF training finds on the same values decoded at once."""
    monkeypatch.setattr(ivf_training, "DECODE_BLOCK", block)
    x = unit_vectors(4000, 64, 3)
    codec = Sq8Codec(64)
    codes = codec.encode(x)
    reference = IvfIndex._untrained(64, 32, "ivf_sq8", 9)
    reference.train(codec.decode(codes))
    got = IvfIndex._untrained(64, 32, "ivf_sq8", 9)
    train_lists(got, codes, codec)
    centroids = got.quantizer.reconstruct_n(0, 32)
    assert got.is_trained and np.allclose(centroids, reference.quantizer.reconstruct_n(0, 32), atol=1e-5)
    assert np.array_equal(faiss.vector_to_array(got.sq.trained), [-1.0, 2.0])  # the fixed range, not the sample's


@pytest.mark.parametrize("block", [7, 100, 32_768])
def test_the_faces_near_the_queries_are_found_block_by_block_as_in_one_search(block, monkeypatch):
    monkeypatch.setattr(ivf_training, "DECODE_BLOCK", block)
    rng = np.random.default_rng(5)
    x = unit_vectors(900, 16, 6)
    queries = x[rng.choice(900, 40, replace=False)] + 0.05 * unit_vectors(40, 16, 7)
    codec = Sq8Codec(16)
    codes = codec.encode(x)
    decoded = codec.decode(codes)
    sims, rows = faiss.knn(queries.astype(np.float32), decoded, 10, metric=faiss.METRIC_INNER_PRODUCT)
    want = np.unique(rows[sims >= RELEVANT_SCORE])
    assert len(want) > 10
    assert np.array_equal(relevant_in_sample(queries, decoded_blocks(codes, codec)), want)
    assert np.array_equal(relevant_in_sample(queries, decoded_blocks(decoded, None)), want)


@pytest.mark.parametrize("family", ["ivf", "ivf_sq8"])
def test_a_sample_is_read_a_chunk_at_a_time(family):
    """Each fetch hands its catalog pages back (store._segment_source): the sample read in
    one fetch left 2.3 GB of a 1M-face catalog resident until it ended (RSS 2.2x during a
    retrain, committed-2026-12-07-scale1m-retrain-in-place-cpu2)."""
    x = unit_vectors(3000, 32, 8)
    ids = np.arange(3000, dtype=np.int64) * 2
    kept = np.arange(3000) % 3 != 0  # a third removed after the catalog was read: not returned by a fetch
    present = VectorSource.of(ids[kept], x[kept])
    asked = []

    def fetch(wanted):
        asked.append(len(wanted))
        return present._fetch(wanted)

    source = VectorSource(ids, 32, fetch, chunk=128)
    rows = np.arange(0, 3000, 2)
    codec = Sq8Codec(32) if family == "ivf_sq8" else None
    want_ids, want = present.vectors_of(ids[rows])
    asked.clear()
    got_ids, got = take_sample(source, rows, codec)
    assert len(want_ids) == 1000 and np.array_equal(got_ids, want_ids)
    assert np.array_equal(got, codec.encode(want) if codec else want)
    assert max(asked) <= 128 and sum(asked) == len(rows)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_an_8_bit_index_trains_holding_less_than_its_float_sample_once(tmp_path, monkeypatch):
    """Issue 23: training held its float32 sample (64 faces a list) twice while it dropped
    the faces near the calibration queries: at 2M faces 1 GB beside an index of 1 GB
    (a retrain peaked at 2.03x). 40,000 faces, 512 lists: the sample is 64 MB of float32;
    an 8-bit index trains from 16 MB of codes, with 8 MB read at a time (40 MB above the
    start measured, against 131 MB before)."""
    from facebank.index import vectors

    monkeypatch.setattr(vectors, "nlist_for", lambda n: 512)
    monkeypatch.setattr(ivf_training, "DECODE_BLOCK", 4096)
    n, dim = 40_000, 512
    x = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float32, (n, dim))  # the catalog's stand-in: not anonymous memory
    for start in range(0, n, 4096):
        x[start:start + 4096] = unit_vectors(min(4096, n - start), dim, start)
    source = VectorSource(np.arange(n, dtype=np.int64), dim, lambda wanted: (wanted, np.ascontiguousarray(x[wanted])), chunk=4096)
    sample_kb = 64 * 512 * dim * 4 // 1024
    with anonymous_peak() as memory:
        index, calibration = IvfIndex.trained_empty(dim, source, family="ivf_sq8", seed=3)
    assert index.nlist == 512 and index.index.is_trained and calibration is not None
    grown = memory["grown"]
    assert grown < sample_kb, f"training took {grown} KB for a float32 sample of {sample_kb} KB"
