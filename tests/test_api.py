"""The API end to end, run twice: against the in-process engine and against a
real gRPC server on a loopback port. Both must behave the same."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import FACES, photos, single_person_photos
from facebank.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from facebank.v1 import facebank_pb2 as pb

GROUPS = FACES / "groups"


def enroll_first_photos(fb, collection: str = "default") -> dict[str, list]:
    """Enroll the first photo of every identity; return the held-back photos."""
    held_back = {}
    for identity, shots in single_person_photos().items():
        fb.enroll(identity, [shots[0].path], collection=collection)
        held_back[identity] = shots[1:]
    return held_back


def test_enroll_then_identify_every_held_back_photo(client):
    held_back = enroll_first_photos(client)
    probes = [(identity, p) for identity, shots in held_back.items() for p in shots]
    assert len(probes) >= 15
    for identity, photo in probes:
        result = client.search(photo.path)
        assert len(result.faces) == 1, photo.path
        matches = result.faces[0].matches
        assert matches and matches[0].identity_id == identity, (photo.path, [(m.identity_id, m.score) for m in matches])
        assert matches[0].score >= 0.5


def test_multi_face_probe_reports_every_face_and_unknowns(client):
    enroll_first_photos(client)
    result = client.search(GROUPS / "obama_and_biden.jpg")
    assert len(result.faces) == 3
    found = [f.matches[0].identity_id if f.matches else None for f in result.faces]
    assert sorted(x for x in found if x) == ["biden", "obama"]
    assert found.count(None) == 1  # the unknown person in the background
    strangers = client.search(GROUPS / "multiface.jpg")
    assert len(strangers.faces) == 6
    assert all(not f.matches for f in strangers.faces)  # open set: nobody enrolled is there


def test_search_results_are_ordered_and_thresholded(client):
    enroll_first_photos(client)
    probe = single_person_photos()["obama"][1].path
    loose = client.search(probe, top_k=5, threshold=-1.0)
    scores = [m.score for m in loose.faces[0].matches]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    strict = client.search(probe, threshold=0.99)
    assert strict.faces[0].matches == [] and abs(strict.threshold - 0.99) < 1e-6


def test_verify_two_images_and_against_identity(client):
    obama, biden = single_person_photos()["obama"], single_person_photos()["biden"]
    same = client.verify(obama[0].path, other_image=obama[1].path)
    assert same.match and same.score >= 0.5
    different = client.verify(obama[0].path, other_image=biden[0].path)
    assert not different.match and different.score < 0.3
    client.enroll("obama", [obama[0].path])
    assert client.verify(obama[2].path, identity_id="obama").match
    assert not client.verify(biden[1].path, identity_id="obama").match


def test_enroll_is_idempotent_per_image(client):
    shots = single_person_photos()["kit_harington"]
    first = client.enroll("kit", [shots[0].path, shots[1].path])
    assert [i.already_enrolled for i in first.images] == [False, False]
    again = client.enroll("kit", [shots[1].path, shots[2].path, shots[2].path])
    assert [i.already_enrolled for i in again.images] == [True, False, True]
    assert again.identity.face_count == 3
    assert client.get_identity("kit").face_count == 3


def test_metadata_filter_and_identity_updates(client):
    shots = single_person_photos()
    client.enroll("obama", [shots["obama"][0].path], metadata={"party": "dem", "role": "president"}, display_name="Barack Obama")
    client.enroll("biden", [shots["biden"][0].path], metadata={"party": "dem", "role": "vp"})
    client.enroll("kit", [shots["kit_harington"][0].path], metadata={"role": "actor"})
    probe = shots["obama"][1].path
    only_vp = client.search(probe, filter={"role": "vp"}, threshold=-1)
    assert [m.identity_id for m in only_vp.faces[0].matches] == ["biden"]
    assert client.search(probe, filter={"role": "nobody"}).faces[0].matches == []
    updated = client.update_identity("biden", set_metadata={"role": "president"}, remove_metadata=["party"])
    assert dict(updated.metadata) == {"role": "president"}
    presidents = client.search(probe, filter={"role": "president"}, threshold=-1)
    assert {m.identity_id for m in presidents.faces[0].matches} == {"obama", "biden"}
    assert presidents.faces[0].matches[0].display_name == "Barack Obama"


def test_list_identities_pages_through_everything(client):
    for i in range(7):
        client.enroll(f"person-{i}", [single_person_photos()["obama"][0].path], accept_low_quality=True)
    seen = [i.id for i in client.list_identities(page_size=3)]
    assert seen == [f"person-{i}" for i in range(7)]


def test_delete_face_keeps_the_identity(client):
    shots = single_person_photos()["obama"]
    r = client.enroll("obama", [shots[0].path, shots[1].path])
    client.delete_face(r.images[0].face.face_id)
    identity = client.get_identity("obama")
    assert identity.face_count == 1 and [f.face_id for f in identity.faces] == [r.images[1].face.face_id]
    with pytest.raises(NotFound):
        client.delete_face(r.images[0].face.face_id)


def test_forgotten_identity_is_no_longer_identified(client):
    enroll_first_photos(client)
    probe = single_person_photos()["obama"][1].path
    assert client.search(probe).faces[0].matches[0].identity_id == "obama"
    receipt = client.forget("obama")
    assert receipt.removed["faces"] == 1 and receipt.verification.passed
    assert client.search(probe).faces[0].matches == []
    with pytest.raises(NotFound):
        client.get_identity("obama")
    with pytest.raises(NotFound):
        client.forget("obama")


def test_collections_lifecycle(client):
    created = client.create_collection("staff", index="hnsw", threshold=0.5)
    assert created.threshold == pytest.approx(0.5) and created.model_id
    with pytest.raises(AlreadyExists):
        client.create_collection("staff")
    client.enroll("obama", [single_person_photos()["obama"][0].path], collection="staff")
    described = client.describe_collection("staff")
    assert (described.stats.identities, described.stats.faces, described.stats.indexed) == (1, 1, 1)
    assert {c.name for c in client.list_collections()} == {"default", "staff"}
    dropped = client.drop_collection("staff")
    assert dropped.identities_forgotten == 1
    with pytest.raises(NotFound):
        client.describe_collection("staff")
    with pytest.raises(NotFound):
        client.enroll("obama", [single_person_photos()["obama"][0].path], collection="staff")


def test_search_by_embedding_matches_search_by_image(client, embedder):
    enroll_first_photos(client)
    from facebank.embedder import decode_image

    probe = single_person_photos()["rose_leslie"][1]
    vector = embedder.analyze([decode_image(probe.data)])[0][0].embedding
    by_vector = client.search_embeddings(np.stack([vector, -vector]), top_k=3)
    by_image = client.search(probe.path, top_k=3)
    assert by_vector.results[0].matches[0].identity_id == "rose_leslie"
    assert by_vector.results[0].matches[0].score == pytest.approx(by_image.faces[0].matches[0].score, abs=1e-4)
    assert by_vector.results[1].matches == []
    # the SDK sends the packed float32 matrix; the per-value form answers the same
    by_values = client.transport.call("Search", "SearchByEmbedding", pb.SearchByEmbeddingRequest(
        queries=[pb.Embedding(values=vector.tolist())], options=pb.SearchOptions(top_k=3)))
    assert [(m.identity_id, round(m.score, 5)) for m in by_values.results[0].matches] == \
        [(m.identity_id, round(m.score, 5)) for m in by_vector.results[0].matches]


def test_packed_answer_holds_the_same_matches_as_the_messages(client, embedder):
    from facebank import MatchArrays
    from facebank.embedder import decode_image

    held_back = enroll_first_photos(client)
    client.enroll("obama", [p.path for p in held_back["obama"][:2]])  # an identity of three faces
    probes = [shots[0] for shots in held_back.values() if shots]
    queries = np.stack([embedder.analyze([decode_image(p.data)])[0][0].embedding for p in probes])
    queries = np.concatenate([queries, -queries[:1]])  # and one that matches nobody above the threshold
    for top_k, threshold in ((5, -1.0), (3, None)):  # everyone, then only the matches over the collection's threshold
        messages = client.search_embeddings(queries, top_k=top_k, threshold=threshold)
        packed = client.search_embeddings(queries, top_k=top_k, threshold=threshold, packed=True)
        assert not packed.results and not messages.HasField("packed") and packed.threshold == messages.threshold
        m = MatchArrays.from_pb(packed.packed)
        assert m.scores.shape == (len(queries), top_k)
        for i, result in enumerate(messages.results):
            n = len(result.matches)
            assert list(m.identity_ids[i, :n]) == [x.identity_id for x in result.matches]
            assert list(m.display_names[i, :n]) == [x.display_name for x in result.matches]
            assert m.scores[i, :n].tolist() == [x.score for x in result.matches]
            assert [m.faces(i, j).tolist() for j in range(n)] == [list(x.face_ids) for x in result.matches]
            assert m.faces(i).tolist() == [f for x in result.matches for f in x.face_ids]
            assert list(m.identity_ids[i, n:]) == [""] * (top_k - n) and np.isnan(m.scores[i, n:]).all()
            assert not m.face_counts[i, n:].any()
        assert m.face_counts.max() == 3  # obama's probe is now one of his faces: all three are found
    assert m.identity_ids[-1, 0] == ""  # the negated query: unknown


@pytest.mark.parametrize(
    "vectors, fragment",
    [
        (np.ones((1, 128)), "512-dimensional"),
        (np.full((1, 512), np.nan), "NaN"),
        (np.concatenate([np.ones((1, 511)), [[np.inf]]], axis=1), "NaN or infinite"),
        (np.zeros((1, 512)), "all zeros"),
    ],
)
def test_bad_embeddings_are_refused(client, vectors, fragment):
    with pytest.raises(InvalidArgument, match=fragment):
        client.search_embeddings(vectors)


def test_failed_enrollment_stores_nothing(client):
    good = single_person_photos()["obama"][0].path
    with pytest.raises(InvalidArgument, match="image 2"):  # counted from 1, and named by its file when it has one
        client.enroll("obama", [good, b"not an image"])
    with pytest.raises(InvalidArgument, match="no face"):
        client.enroll("obama", [good, _blank_jpeg()])
    with pytest.raises(NotFound):
        client.get_identity("obama")
    stats = client.describe_collection().stats
    assert (stats.identities, stats.faces, stats.indexed) == (0, 0, 0)


def test_model_of_collection_must_match_server(client):
    client.enroll("obama", [single_person_photos()["obama"][0].path])
    stats = client.stats()
    assert stats.model_id == "scrfd500m-w600kmbf"
    assert all(c.model_id == stats.model_id for c in stats.collections)


def _blank_jpeg() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (200, 180, 160)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_every_rpc_is_implemented_by_the_engine(engine):
    from facebank.server.grpc_api import SERVICES
    from facebank.server.engine import method_name

    for service in SERVICES:
        impl = engine.service(service.name)
        for method in service.methods:
            assert callable(getattr(impl, method_name(method.name), None)), f"{service.name}/{method.name}"


def test_failed_precondition_for_unknown_model(tmp_path, embedder):
    """A collection made by another model is refused with a clear status."""
    from facebank.server.engine import Engine
    from conftest import make_config

    engine = Engine(make_config(tmp_path / "d"), embedder=embedder)
    try:
        with engine.store.write() as t:
            rec = t.get_collection("default")
            rec.model_id = "some-other-model"
            t.put_collection(rec)
        with pytest.raises(FailedPrecondition, match="some-other-model"):
            engine.search.search_by_image(pb.SearchByImageRequest(image=pb.Image(data=single_person_photos()["obama"][0].data)))
    finally:
        engine.close()


def test_photos_fixture_matches_labels():
    counted = photos()
    assert len(counted) == 31 and all(p.path.exists() for p in counted)
