"""Moving a collection to another model (the default pair -> SFace, two different ONNX
recognizers, 512-d and 128-d) from its kept crops, with every name kept: in process,
with searches and a forget during the migration, refused without crops, and over
the CLI with the server SIGKILLed in the middle and the migration finished after
a restart."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from conftest import FACES, ServerProcess, make_config, single_person_photos
from facebank.client import Client
from facebank.embedder.models import SFACE_MODEL_ID
from facebank.errors import FailedPrecondition, NotFound
from facebank.index import crop_fill, migration
from facebank.index.sealed_faces import open_embedding
from facebank.v1 import facebank_pb2 as pb
from facebank.server.engine import Engine
from facebank.transport import GrpcTransport, LocalTransport

PEOPLE = {p: photos for p, photos in single_person_photos().items() if len(photos) >= 2}


@pytest.fixture
def local(tmp_path, embedder):
    engine = Engine(make_config(tmp_path / "data"), embedder=embedder)
    fb = Client(LocalTransport(engine))
    for person, photos in PEOPLE.items():
        fb.enroll(person, [photos[0].path], display_name=person.replace("_", " ").title(), metadata={"team": person[0]})
    yield fb, engine
    fb.close()  # closes the engine too


def _identities(fb, collection="default") -> dict:
    out = {}
    for i in fb.list_identities(collection=collection):
        out[i.id] = (i.display_name, dict(i.metadata), sorted(f.face_id for f in i.faces))
    return out


def _rank1(fb, collection="default") -> dict[str, bool]:
    """Every other photo of each person, searched: is that person the best match?"""
    found = {}
    for person, photos in PEOPLE.items():
        for photo in photos[1:]:
            faces = fb.search(photo.path, collection=collection).faces
            found[f"{person}/{photo.path.name}"] = bool(faces and faces[0].matches and faces[0].matches[0].identity_id == person)
    return found


def _staged_rows(engine) -> int:
    with engine.store.read() as t:
        return sum(1 for _ in t.raw_rows("staged_embeddings"))


def test_a_collection_moves_to_another_model_with_every_name_kept(local):
    fb, engine = local
    before = _identities(fb)
    old_model = fb.describe_collection("default").model_id
    assert all(_rank1(fb).values())

    (plan,) = list(fb.migrate("sface", dry_run=True))
    assert plan.stage == "plan" and plan.total == len(PEOPLE) and plan.faces_without_crops == 0 and plan.estimate_s > 0
    assert fb.describe_collection("default").model_id == old_model and _staged_rows(engine) == 0  # a dry run changes nothing

    events = list(fb.migrate("sface"))
    assert events[0].stage == "plan" and events[-1].stage == "done"
    assert [e.done for e in events if e.stage == "embed"][-1] == len(PEOPLE)
    coll = fb.describe_collection("default")
    assert coll.model_id == SFACE_MODEL_ID and coll.embedding_dim == 128 and coll.threshold == pytest.approx(0.363)
    assert _identities(fb) == before  # ids, names, metadata, face ids
    assert all(_rank1(fb).values()), _rank1(fb)  # every identity found at rank 1 by the new model
    assert _staged_rows(engine) == 0
    face = fb.enroll("newcomer", [PEOPLE["obama"][1].path]).images[0].face
    assert face.model_id == SFACE_MODEL_ID  # new faces of the collection come from its new model
    assert fb.face_crop(face.face_id).image  # and crops are kept as before
    with pytest.raises(FailedPrecondition, match="already holds"):
        list(fb.migrate("sface"))


def test_searches_go_on_during_a_migration_and_a_forget_meanwhile_leaves_nothing(local, monkeypatch):
    fb, engine = local
    monkeypatch.setenv("FACEBANK_MIGRATE_BATCH", "1")
    stream = iter(fb.migrate("sface"))
    assert next(stream).stage == "plan"
    assert next(stream).stage == "embed" and _staged_rows(engine) == 1
    assert fb.search(PEOPLE["obama"][1].path).faces[0].matches[0].identity_id == "obama"  # the old model and index still answer
    biden_faces = [f.face_id for f in fb.get_identity("biden").faces]
    receipt = fb.forget("biden")
    assert receipt.verification.passed
    assert next(stream).stage == "embed"
    rest = list(stream)
    assert rest[-1].stage == "done"
    with engine.store.read() as t:
        assert all(t.get_staged(fid) is None and t.get_embedding(fid) is None for fid in biden_faces)
    with pytest.raises(NotFound):
        fb.get_identity("biden")
    found = {k: v for k, v in _rank1(fb).items() if not k.startswith("biden/")}
    assert all(found.values()), found
    assert fb.describe_collection("default").stats.faces == len(PEOPLE) - 1


def test_faces_without_crops_are_named_and_the_migration_refused(local):
    fb, engine = local
    fb.create_collection("templates", keep_crops=False)
    face = fb.enroll("obama", [PEOPLE["obama"][0].path], collection="templates").images[0].face
    (plan,) = list(fb.migrate("sface", collection="templates", dry_run=True))
    assert plan.faces_without_crops == 1 and list(plan.without_crops) == [face.face_id]
    with pytest.raises(FailedPrecondition, match="no kept crop") as err:
        list(fb.migrate("sface", collection="templates"))
    assert str(face.face_id) in str(err.value)
    coll = fb.describe_collection("templates")
    assert coll.model_id != SFACE_MODEL_ID and fb.search(PEOPLE["obama"][1].path, collection="templates").faces[0].matches[0].identity_id == "obama"
    with engine.store.read() as t:
        assert migration.state_of(t, coll_id(engine, "templates")) is None


def coll_id(engine, name: str) -> int:
    return engine.store.collection(name).id


def test_a_migration_killed_in_the_middle_finishes_after_a_restart(tmp_path):
    data = tmp_path / "data"
    server = ServerProcess(data, env={"FACEBANK_MIGRATE_BATCH": "1", "FACEBANK_CRASH_AT": "migration:after-batch:2"}).start()
    try:
        with Client(GrpcTransport(server.address)) as fb:
            for person, photos in PEOPLE.items():
                fb.enroll(person, [photos[0].path], display_name=person.title())
            before = _identities(fb)
        crashed = server.cli("migrate", "--model", "sface", check=False)
        assert crashed.returncode != 0  # the server died under it (SIGKILL after the second batch)
        assert server.proc.wait(timeout=30) == -9
    finally:
        server.kill()

    server = ServerProcess(data).start()
    try:
        dry = json.loads(server.cli("migrate", "--model", "sface", "--dry-run", "--json").stdout)["plan"]
        assert dry["already_staged"] == 2 and dry["faces"] == len(PEOPLE)  # the two committed batches were kept
        done = json.loads(server.cli("migrate", "--model", "sface", "--json").stdout)
        assert done["done"] and done["plan"]["already_staged"] == 2
        with Client(GrpcTransport(server.address)) as fb:
            assert fb.describe_collection("default").model_id == SFACE_MODEL_ID
            assert _identities(fb) == before
            assert all(_rank1(fb).values())
    finally:
        server.stop()
    server = ServerProcess(data).start()  # and it stays so after a restart (indexes rebuilt from the new vectors)
    try:
        with Client(GrpcTransport(server.address)) as fb:
            assert fb.describe_collection("default").model_id == SFACE_MODEL_ID and all(_rank1(fb).values())
    finally:
        server.stop()


GROUP = FACES / "groups" / "multiface.jpg"


def _cos_to_stored(engine, embedder, fb, face_ids, collection) -> list[float]:
    """For each face: its kept crop embedded again, against its stored embedding."""
    from facebank.embedder import decode_image

    crops = np.stack([decode_image(fb.face_crop(fid, collection=collection).image) for fid in face_ids])
    again = embedder.embed_crops(crops)
    with engine.store.read() as t:
        stored = np.stack([open_embedding(engine.store.keyring, t, fid) for fid in face_ids])
    return [float(a @ b) for a, b in zip(again, stored)]


def test_faces_stored_without_crops_get_their_own_crop_back_from_their_photo(local, embedder):
    fb, engine = local
    fb.create_collection("templates", keep_crops=False)
    (result,) = list(fb.ingest([pb.IngestItem(item_id="crowd", collection="templates", image=pb.Image(data=GROUP.read_bytes()))]))
    crowd = [f.face_id for f in result.faces]
    assert len(crowd) >= 5
    with pytest.raises(FailedPrecondition, match="keep_crops off"):
        fb.fill_crops(GROUP, collection="templates")
    with pytest.raises(FailedPrecondition, match="refused"):
        fb.update_collection("default", keep_crops=False)  # crops already kept stay, so turning it off is refused
    assert fb.update_collection("templates", keep_crops=True).keep_crops
    assert fb.cropless_images(collection="templates") == {hashlib.sha256(GROUP.read_bytes()).hexdigest()}

    other = fb.fill_crops(PEOPLE["obama"][1].path, collection="templates")  # a photo no face came from
    assert list(other.filled) == [] and list(other.unmatched) == []
    r = fb.fill_crops(GROUP, collection="templates")
    assert sorted(r.filled) == sorted(crowd) and list(r.unmatched) == []
    cosines = _cos_to_stored(engine, embedder, fb, crowd, "templates")
    assert min(cosines) > 0.95, cosines  # every face got its own crop, not a neighbour's
    assert fb.cropless_images(collection="templates") == set()
    assert list(fb.fill_crops(GROUP, collection="templates").filled) == []  # again: nothing left to fill


def test_a_crop_goes_only_to_the_same_face(local):
    """Overlapping box but another person's embedding: no crop is attached."""
    fb, engine = local
    fb.create_collection("templates", keep_crops=False)
    face = fb.enroll("obama", [PEOPLE["obama"][0].path], collection="templates").images[0].face
    fb.update_collection("templates", keep_crops=True)
    biden = fb.enroll("biden", [PEOPLE["biden"][0].path], collection="templates").images[0].face
    with engine.store.read() as t:
        obama_rec, biden_vec = t.get_face(face.face_id), open_embedding(engine.store.keyring, t, biden.face_id)
    stranger = crop_fill.SeenFace(obama_rec.box, biden_vec, b"not obama's face")
    done = crop_fill.fill_crops(engine.store, "templates", obama_rec.image_sha256, [stranger])
    assert done.filled == [] and done.unmatched == [face.face_id]
    with pytest.raises(FailedPrecondition, match="no kept crop"):
        fb.face_crop(face.face_id, collection="templates")


def test_migrate_from_photos_over_the_cli_fills_missing_crops_then_moves_the_collection(tmp_path):
    server = ServerProcess(tmp_path / "data").start()
    try:
        with Client(GrpcTransport(server.address)) as fb:
            fb.create_collection("old", keep_crops=False)
            for person, photos in PEOPLE.items():
                fb.enroll(person, [photos[0].path], collection="old")
            before = _identities(fb, "old")
        refused = server.cli("migrate", "-c", "old", "--from-photos", str(FACES), check=False)
        assert refused.returncode == 1 and refused.stderr.strip().splitlines()[-1].startswith("error: collection 'old' has keep_crops off")
        server.cli("collections", "set", "old", "--crops")
        out = json.loads(server.cli("migrate", "-c", "old", "--from-photos", str(FACES), "--model", "sface", "--json").stdout)
        assert out["crops"]["faces_filled"] == len(PEOPLE) and out["crops"]["photos_not_found"] == 0 and out["crops"]["faces_unmatched"] == []
        assert out["done"] and out["plan"]["faces_without_crops"] == 0
        with Client(GrpcTransport(server.address)) as fb:
            assert fb.describe_collection("old").model_id == SFACE_MODEL_ID
            assert _identities(fb, "old") == before
            assert all(_rank1(fb, "old").values())
    finally:
        server.stop()


def test_a_rebuild_under_way_when_the_collection_switches_model_reports_no_damage(tmp_path, embedder, monkeypatch, caplog):
    """A rebuild reads its faces' vectors from the catalog a chunk at a time (at 10M faces
    they do not fit in memory at once). A migration that switches the collection to another
    model while the rebuild reads must not make every face it reads then look damaged (new
    vectors of another length): the rebuild notices the switch, is dropped, and the
    collection is searched with the new model's index."""
    import logging
    import time

    caplog.set_level(logging.INFO, logger="facebank.index.maintenance")
    engine = Engine(make_config(tmp_path / "data"), embedder=embedder)
    fb = Client(LocalTransport(engine))
    try:
        fb.create_collection("h", index="hnsw")
        for person, photos in PEOPLE.items():
            fb.enroll(person, [photos[0].path], collection="h")
        engine.maintenance.clean_now()
        monkeypatch.setenv("FACEBANK_DELAY_AT", "rebuild:build=8")
        fb.forget("biden", collection="h")  # a removal from HNSW leaves a tombstone: a rebuild follows
        deadline = time.monotonic() + 20
        while not any("rebuilding" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the rebuild after the forget did not start"
            time.sleep(0.05)
        assert list(fb.migrate("sface", collection="h"))[-1].stage == "done"  # within the rebuild's read
        deadline = time.monotonic() + 30
        while not any(("rebuilt" in r.getMessage() or "dropped" in r.getMessage()) for r in caplog.records):
            assert time.monotonic() < deadline, "the rebuild did not end"
            time.sleep(0.2)
        assert len(engine.store.damage) == 0, engine.store.damage.rows()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
        cid = engine.store.collection("h").id
        assert engine.store.segments.get(cid, "enrolled").dim == engine.store.collection("h").dim
        found = {k: v for k, v in _rank1(fb, "h").items() if not k.startswith("biden/")}
        assert found and all(found.values()), found
    finally:
        fb.close()
