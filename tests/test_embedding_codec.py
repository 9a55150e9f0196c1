"""Embeddings packed before sealing: lossless, readable beside rows written bare, small enough for a leaf page."""

import numpy as np
import pytest
from conftest import single_person_photos, synthetic_faces

from facebank.embedder.images import decode_image
from facebank.errors import DataCorruption
from facebank.index.embedding_codec import MAGIC, pack, unpack
from facebank.index.sealed_faces import open_embedding

# LMDB (4 KB pages) keeps a value inside its leaf page up to 2,021 bytes with an 8-byte key;
# a catalog row adds 16 (owner, slot), 28 (nonce, tag of the seal) and 16 (row MAC) to the plaintext.
INLINE_PLAINTEXT = 2021 - 16 - 28 - 16


def unit_rows(n, dim, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("dim", [128, 512])
def test_packing_is_lossless_bit_for_bit_and_fits_a_leaf_page(dim):
    rows = unit_rows(500, dim)
    rows[0, :3] = [-0.0, 1e-38, -3.4e38]   # signed zero, a denormal's neighbour, the largest magnitude
    for v in rows:
        plain = pack(v)
        assert plain[:4] == MAGIC
        assert unpack(plain).view("<u4").tolist() == v.view("<u4").tolist()
    sizes = [len(pack(v)) for v in rows[1:]]
    assert max(sizes) < 4 * dim
    if dim == 512:
        assert max(sizes) <= INLINE_PLAINTEXT, max(sizes)


def test_real_embeddings_pack_below_a_leaf_page(embedder):
    images = [decode_image(p.data) for people in single_person_photos().values() for p in people[:2]]
    vectors = [face.embedding for faces in embedder.analyze(images) for face in faces]
    assert len(vectors) >= 10
    for v in vectors:
        plain = pack(v)
        assert len(plain) <= INLINE_PLAINTEXT and unpack(plain).view("<u4").tolist() == np.asarray(v, "<f4").view("<u4").tolist()


def test_a_catalog_keeps_its_embeddings_inside_leaf_pages(engine):
    """Before packing, every embedding row took an overflow page of its own (4 KB a face)."""
    synthetic_faces(engine, "default", 300)
    catalog = engine.store.catalog
    with catalog.env.begin() as txn:
        stat = txn.stat(catalog._dbs["embeddings"])
    assert stat["entries"] == 300 and stat["overflow_pages"] == 0
    assert stat["leaf_pages"] <= 300 / 2 + 2                   # two rows a page
    with engine.store.read() as t:
        ids = [int.from_bytes(key, "big") for key, _ in t._prefix("embeddings", b"")]
        assert len(ids) == 300 and all(np.isclose(np.linalg.norm(open_embedding(engine.store.keyring, t, f)), 1) for f in ids)


def test_rows_written_bare_still_read_and_incompressible_values_stay_bare():
    v = unit_rows(1, 512)[0]
    assert np.array_equal(unpack(v.tobytes()), v)              # a row written before packing
    noise = np.random.default_rng(1).integers(0, 2**32, 512, dtype=np.uint32).view("<f4")
    noise = np.where(np.isfinite(noise), noise, 0).astype("<f4")
    assert pack(noise) == noise.tobytes()                       # nothing saved: kept bare
    assert unpack(pack(noise)).view("<u4").tolist() == noise.view("<u4").tolist()


@pytest.mark.parametrize("cut", [5, 9, 300, -1])
def test_a_packed_plaintext_that_does_not_unpack_is_damage_not_a_crash(cut):
    plain = pack(unit_rows(1, 512)[0])
    with pytest.raises(DataCorruption):
        unpack(plain[:cut])


def test_check_names_a_sealed_embedding_that_authenticates_but_does_not_unpack(engine):
    from facebank.index.integrity import check_catalog
    from facebank.index.keyring import embedding_aad
    from facebank.index.sealed_faces import owner_tag

    synthetic_faces(engine, "default", 3)
    store = engine.store
    with store.read() as t:
        fid = int.from_bytes(next(t._prefix("embeddings", b""))[0], "big")
        iid, slot, _ = t.get_embedding(fid)
        good = open_embedding(store.keyring, t, fid)
    key = store.keyring.open(slot, owner_tag(iid, fid))
    with store.catalog.write() as t:   # a writer's defect, sealed and tagged like a good row
        t.put_embedding(fid, iid, slot, key.seal(pack(good)[:-7], embedding_aad(fid)))
    _, damaged, _ = check_catalog(store)
    assert [(d.table, d.described) for d in damaged] == [("embeddings", str(fid))]
    assert "does not unpack" in damaged[0].problem


def test_rows_unpacked_together_match_one_at_a_time():
    """The batched path (a rebuild's) against unpacking each row alone: packed, bare and damaged rows mixed."""
    from facebank.index.embedding_codec import unpack_rows

    rows = unit_rows(40, 512, seed=3)
    plains = [pack(v) if i % 3 else v.tobytes() for i, v in enumerate(rows)]
    plains[7] = plains[7][:-5]                      # packed, cut short
    plains[9] = rows[9][:100].tobytes()             # bare, another dimension
    read, vectors, problems = unpack_rows(plains, 512)
    alone = []
    for p in plains:
        try:
            alone.append(unpack(p))
        except DataCorruption:
            alone.append(None)
    assert [at for at, _ in problems] == [7, 9] and not read[7] and not read[9]
    assert read.tolist() == [a is not None and len(a) == 512 for a in alone]
    assert np.array_equal(vectors, np.stack([a for a in alone if a is not None and len(a) == 512]))
    assert np.array_equal(vectors, np.delete(rows, [7, 9], axis=0))
