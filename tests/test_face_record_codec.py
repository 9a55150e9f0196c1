"""A face record's binary stored form: read back exactly as written, under two fifths
of the JSON it replaced for a real photo's face, and JSON rows written before still read."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import single_person_photos, synthetic_faces
from facebank.client import Client
from facebank.index.catalog_tables import TAG
from facebank.index.face_record_codec import QUALITY_KEYS, decode_face, encode_face
from facebank.index.records import FaceRecord, IndexSettings, dumps
from facebank.transport import LocalTransport

PEOPLE = {name: photos[:2] for name, photos in single_person_photos().items() if len(photos) >= 2}
SHA = "6ae30b9f8da80d16d3dc8feb3d419d9ce111782d6bc35b435ae80e817730f6fe"
QUALITY = {"passed": True, "reasons": [], "face_size": 172.2, "detection_score": 0.7252, "sharpness": 3168.32,
           "yaw": -4.6, "pitch": 13.0, "roll": 2.5}


def _face(**changes) -> FaceRecord:
    rec = FaceRecord(123456, 1, 45678, [326.9501953125, 136.49729919433594, 499.1051025390625, 360.98394775390625],
                     [[372.2649230957031, 228.3480682373047], [449.075439453125, 231.64556884765625]],
                     0.7252078056335449, dict(QUALITY), SHA, "shea_whigham_01.jpg", "scrfd500m-w600kmbf", 1796309762542, 45679)
    for name, value in changes.items():
        setattr(rec, name, value)
    return rec


@pytest.mark.parametrize("changes", [
    {},
    {"box": [0.1, 0.2, 1e-300, 3.4e39], "detection_score": 0.9},   # not float32 values: kept as float64
    {"box": [float("inf"), -0.0, 0.0, 1.0]},
    {"detection_score": 0.9},                # a float64 score beside float32 coordinates
    {"box": [0, 0, 1, 1]}, {"detection_score": 1},   # ints: kept as JSON, so they come back ints
    {"landmarks": [], "box": []},
    {"image_sha256": SHA.upper()}, {"image_sha256": "not a hash"}, {"image_sha256": ""},
    {"source_ref": "photos/été/🙂.jpg", "model_id": ""},
    {"quality": {}}, {"quality": {"passed": True}}, {"quality": {**QUALITY, "face_size": 172}},   # an int: kept as JSON
    {"quality": {**QUALITY, "reasons": ["too small", "blurry"]}},
    {"quality": dict(reversed(QUALITY.items()))}, {"quality": {"nested": {"a": [1, 2.5, None]}}},
    {"iid": 0, "cluster_id": 2**63 - 1, "key_slot": 0},
    {"source_ref": "x" * 70_000},            # past the 64 KB a text field holds: written as JSON
    {"face_id": 2**64},                       # past 63 bits: written as JSON
])
def test_a_face_record_reads_back_exactly_as_written(changes):
    rec = _face(**changes)
    back = decode_face(encode_face(rec))
    assert back == rec and dumps(back) == dumps(rec)   # the same values and the same types (an int stays an int)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.builds(
    FaceRecord, st.integers(0, 2**63 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**63 - 1),
    st.lists(st.floats(allow_nan=False) | st.floats(width=32, allow_nan=False), max_size=6),
    st.lists(st.tuples(st.floats(allow_nan=False), st.floats(width=32, allow_nan=False)).map(list), max_size=6),
    st.floats(allow_nan=False), st.dictionaries(st.sampled_from(QUALITY_KEYS), st.floats(allow_nan=False) | st.booleans()),
    st.text(max_size=70) | st.just(SHA), st.text(max_size=30), st.text(max_size=30), st.integers(0, 2**63 - 1),
    st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1)))
def test_any_face_record_reads_back_exactly_as_written(rec):
    back = decode_face(encode_face(rec))
    assert back == rec and dumps(back) == dumps(rec)


def test_a_json_face_row_written_before_still_reads():
    rec = _face()
    assert decode_face(dumps(rec)) == rec


@pytest.mark.parametrize("cut", [1, 10, 60, 100])
def test_a_binary_face_row_cut_short_is_refused_not_misread(cut):
    raw = encode_face(_face())
    with pytest.raises(ValueError):
        decode_face(raw[:-cut] if cut < 100 else raw[:cut])


def test_a_stored_face_of_a_real_photo_takes_under_two_fifths_of_its_json(tmp_path, embedder):
    """The faces table held each face's JSON record: 713 bytes for a face of a real photo."""
    from conftest import make_config
    from facebank.server.engine import Engine

    engine = Engine(make_config(tmp_path / "data"), embedder=embedder)
    fb = Client(LocalTransport(engine))
    try:
        for name, photos in list(PEOPLE.items())[:4]:
            fb.enroll(name, [p.path for p in photos])
        with engine.store.read() as t:
            rows = [(int.from_bytes(key, "big"), stored) for key, stored in t.raw_rows("faces")]
            records = {fid: t.get_face(fid) for fid, _ in rows}
        assert len(rows) >= 8
        for fid, stored in rows:
            rec = records[fid]
            assert tuple(rec.quality) == QUALITY_KEYS and len(rec.landmarks) == 5   # the embedder's full record
            row = len(stored) - TAG
            assert row < len(dumps(rec)) / 2.5 and row - len(rec.source_ref.encode()) <= 220, (row, len(dumps(rec)))
        listed = fb.get_identity(list(PEOPLE)[0]).faces
        assert len(listed) == 2
        for face in listed:   # served from the binary record
            rec = records[face.face_id]
            assert (face.detection.box.x0, face.detection.box.y1, face.detection.landmarks[4].y) == (rec.box[0], rec.box[3], rec.landmarks[4][1])
            assert face.detection.quality.sharpness == pytest.approx(rec.quality["sharpness"]) and face.image_sha256 == rec.image_sha256
    finally:
        fb.close()
        engine.close()


def test_check_names_a_face_record_that_authenticates_but_does_not_decode(engine):
    from facebank.index.integrity import check_catalog

    synthetic_faces(engine, "default", 3)
    with engine.store.read() as t:
        fid = int.from_bytes(next(t._prefix("faces", b""))[0], "big")
    with engine.store.catalog.write() as t:   # a writer's defect, tagged like a good row
        t._put("faces", fid.to_bytes(8, "big"), struct.pack(">B", 9) + b"\0" * 60)
    _, damaged, _ = check_catalog(engine.store)
    assert [(d.table, d.described) for d in damaged] == [("faces", str(fid))]
    assert "format 9" in damaged[0].problem


def test_a_catalog_of_json_face_rows_keeps_serving_and_new_writes_are_binary(tmp_path):
    """A data directory written before (every face row JSON) opens, lists, searches and
    checks clean; a face written or moved after is stored binary beside the old rows."""
    from conftest import open_store
    from facebank.index import identities
    from facebank.index.integrity import check_catalog
    from facebank.index.sealed_faces import NewFace

    def face(i: int) -> NewFace:
        v = np.random.default_rng(i).standard_normal(16).astype(np.float32)
        return NewFace([1.5, 2.5, 30.25, 40.75], [[5.5, 6.5]] * 5, 0.875, dict(QUALITY), v / np.linalg.norm(v), f"{i:064x}", f"p{i}.jpg", "m")

    store = open_store(tmp_path / "d")
    store.create_collection("c", "m", 16, 0.4, IndexSettings(kind="flat"))
    for i in range(4):
        identities.enroll(store, "c", f"person-{i}", "", {}, [face(i), face(100 + i)])
    with store.catalog.write() as t:   # as an older version stored them
        for key, _ in list(t._prefix("faces", b"")):
            t._put("faces", key, dumps(t.get_face(int.from_bytes(key, "big"))))
    store.close()

    store = open_store(tmp_path / "d")
    try:
        with store.read() as t:
            assert all(stored[:1] == b"{" for _, stored in t.raw_rows("faces"))
        _, faces = identities.identity(store, "c", "person-2")
        assert sorted(f.source_ref for f in faces) == ["p102.jpg", "p2.jpg"] and faces[0].box == [1.5, 2.5, 30.25, 40.75]
        assert store.search("c", np.stack([face(2).embedding]), 1)[0][0].identity.external_id == "person-2"
        identities.enroll(store, "c", "person-9", "", {}, [face(9)])
        _, damaged, _ = check_catalog(store)
        assert damaged == []
        with store.read() as t:
            kinds = sorted(stored[:1] for _, stored in t.raw_rows("faces"))
        assert kinds == [b"\x01"] + [b"{"] * 8
    finally:
        store.close()
