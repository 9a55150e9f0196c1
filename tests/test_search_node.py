"""Search nodes (`serve --role search`): a primary and a node, both real gRPC
servers on loopback, over one real Milvus server. The node answers searches as
the primary does, refuses writes naming the primary, never serves a forgotten
person once the forget has answered, shows renamed identities, and follows the
keys the primary publishes (a revoked key stops working within seconds)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import make_config, single_person_photos
from facebank.client import Client
from facebank.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from facebank.server.app import start
from facebank.server.engine import Engine
from facebank.index.milvus_registry import Registry
from facebank.server import search_node
from facebank.server.search_node import SearchNode
from facebank.transport import GrpcTransport

PEOPLE = {p: photos for p, photos in single_person_photos().items() if len(photos) >= 2}
TEAMS = {person: ("blue" if i % 2 else "red") for i, person in enumerate(sorted(PEOPLE))}


@pytest.fixture
def topology(tmp_path, embedder, milvus_server):
    """(primary client, node client, primary server, node server, the primary's id)."""
    config = make_config(tmp_path / "data", vectors=milvus_server.spec)
    primary = start(config, engine=Engine(config, embedder=embedder))
    prefix = primary.engine.store.milvus_prefix
    node_config = make_config(tmp_path / "node", vectors=milvus_server.spec, role="search", primary_id=prefix)
    node = start(node_config, engine=SearchNode(node_config, embedder=embedder))
    fb, nb = Client(GrpcTransport(primary.address)), Client(GrpcTransport(node.address))
    yield fb, nb, primary, node, prefix
    nb.close()
    fb.close()
    node.stop(grace=1)
    primary.stop(grace=2)


def _enroll_everyone(fb) -> None:
    for person, photos in PEOPLE.items():
        fb.enroll(person, [photos[0].path], display_name=person.replace("_", " ").title(), metadata={"team": TEAMS[person]})


def _answer(response) -> list:
    return [[(m.identity_id, m.display_name, dict(m.metadata), list(m.face_ids), round(m.score, 4)) for m in f.matches]
            for f in response.faces]


def _wait_for(check, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_search_node_answers_as_the_primary_does(topology):
    fb, nb, primary, *_ = topology
    _enroll_everyone(fb)
    for person, photos in PEOPLE.items():
        for photo in photos[1:]:
            ours = _answer(fb.search(photo.path, top_k=3, threshold=0.0))
            theirs = _wait_for(lambda: _check_same(ours, _answer(nb.search(photo.path, top_k=3, threshold=0.0))))
            assert theirs[0][0][0] == person  # and it is the right person
            for team in ("red", "blue"):
                filtered = _answer(fb.search(photo.path, top_k=3, threshold=0.0, filter={"team": team}))
                assert _answer(nb.search(photo.path, top_k=3, threshold=0.0, filter={"team": team})) == filtered
                assert all(m[2]["team"] == team for face in filtered for m in face)
    pipeline = primary.engine.parts.faces
    queries = np.stack([pipeline.analyze([photos[1].data])[0][0].embedding for photos in PEOPLE.values()])
    assert _packed(nb.search_embeddings(queries, packed=True)) == _packed(fb.search_embeddings(queries, packed=True))
    assert _packed(fb.search_embeddings(queries, packed=True))[0]
    obama = PEOPLE["obama"][1].path
    assert nb.verify(obama, identity_id="obama").match and not nb.verify(obama, identity_id="biden").match
    assert nb.verify(obama, identity_id="obama").score == pytest.approx(fb.verify(obama, identity_id="obama").score, abs=1e-5)
    with pytest.raises(NotFound):
        nb.search(obama, collection="nowhere")


def _check_same(ours, theirs):
    assert theirs == ours
    return theirs


def _packed(response) -> tuple:
    p = response.packed
    return tuple(p.identity_ids), p.identities_i32, np.round(np.nan_to_num(np.frombuffer(p.scores_f32, "<f4"), nan=-9), 4).tolist(), p.face_ids_u64


def test_a_search_node_refuses_writes_naming_the_primary(topology):
    fb, nb, *_ = topology
    with pytest.raises(FailedPrecondition, match="search node.*primary"):
        nb.enroll("obama", [PEOPLE["obama"][0].path])
    with pytest.raises(FailedPrecondition, match="search node"):
        nb.forget("obama")
    with pytest.raises(FailedPrecondition, match="search node"):
        list(nb.ingest([]))
    assert fb.list_collections()  # the primary is unaffected


def test_no_node_serves_a_forgotten_person_once_the_forget_answered(topology):
    fb, nb, *_ = topology
    _enroll_everyone(fb)
    probe = PEOPLE["biden"][1].path
    _wait_for(lambda: _check_same("biden", nb.search(probe).faces[0].matches[0].identity_id))
    fb.forget("biden")
    found = nb.search(probe, threshold=0.0, top_k=10)  # at once: no waiting
    assert "biden" not in {m.identity_id for f in found.faces for m in f.matches}
    with pytest.raises(NotFound):
        nb.verify(probe, identity_id="biden")


def test_a_renamed_identity_is_shown_by_nodes(topology):
    fb, nb, *_ = topology
    fb.enroll("obama", [PEOPLE["obama"][0].path], display_name="Barack", metadata={"team": "red"})
    fb.update_identity("obama", display_name="Barack Obama", set_metadata={"team": "blue"})
    match = nb.search(PEOPLE["obama"][1].path).faces[0].matches[0]
    assert (match.display_name, dict(match.metadata)) == ("Barack Obama", {"team": "blue"})
    assert nb.search(PEOPLE["obama"][1].path, filter={"team": "red"}).faces[0].matches == []


def test_nodes_follow_the_keys_the_primary_publishes(topology):
    fb, _, primary, node, _ = topology
    fb.enroll("obama", [PEOPLE["obama"][0].path])
    admin = fb.create_api_key("ops", "admin").secret
    with Client(GrpcTransport(primary.address, api_key=admin)) as fa:
        reader = fa.create_api_key("app", "search", collections=["default"])
        with Client(GrpcTransport(node.address, api_key=reader.secret)) as app, Client(GrpcTransport(node.address)) as anonymous:
            probe = PEOPLE["obama"][1].path
            # until the primary has published the collection, the node cannot know it (NotFound): wait for that first
            _wait_for(lambda: _check_same(True, node.engine.view.collection("default") is not None), seconds=10)

            def anonymous_refused():  # keys exist on the primary: once published, the node wants one too
                with pytest.raises(Unauthenticated):
                    anonymous.search(probe)

            _wait_for(lambda: _raises_assert(anonymous_refused), seconds=10)
            # a key the node has not seen may be new rather than wrong: the refusal says so (it said "revoked or mistyped")
            with Client(GrpcTransport(node.address, api_key="fbk_0123456789ab_" + "x" * 43)) as unseen:
                with pytest.raises(Unauthenticated, match="not published it yet.*retry shortly"):
                    unseen.search(probe)

            def reader_accepted():  # the app's key, made after the admin's, may reach the node a tick later
                try:
                    return app.search(probe)
                except Unauthenticated as err:
                    raise AssertionError(str(err)) from None

            assert _wait_for(reader_accepted, seconds=10).faces[0].matches[0].identity_id == "obama"
            fa.revoke_api_key(reader.key.key_id)
            revoked_at = time.monotonic()

            def refused():
                with pytest.raises(Unauthenticated, match="not valid"):
                    app.search(probe)

            _wait_for(lambda: _raises_assert(refused), seconds=10)
            assert time.monotonic() - revoked_at < 10


@pytest.fixture
def periodic_reads_off(monkeypatch):
    """Request before `topology`: the node then never re-reads its registry on its own."""
    monkeypatch.setattr(search_node, "REFRESH_S", 3600.0)


def test_a_collection_created_on_the_primary_is_served_once_published(periodic_reads_off, topology):
    fb, nb, _, node, prefix = topology
    fb.create_collection("late")
    fb.enroll("obama", [PEOPLE["obama"][0].path], collection="late")
    published = Registry(node.engine.target.client, prefix)
    _wait_for(lambda: _check_same(True, "collection:late" in published.read()), seconds=10)
    match = nb.search(PEOPLE["obama"][1].path, collection="late").faces[0].matches[0]  # at once: not after a periodic read
    assert match.identity_id == "obama"
    with pytest.raises(NotFound, match="'nowhere' does not exist"):
        nb.search(PEOPLE["obama"][1].path, collection="nowhere")


def _raises_assert(fn):
    try:
        fn()
    except pytest.fail.Exception as err:
        raise AssertionError(str(err)) from None


def test_a_search_node_needs_a_milvus_server_and_a_publishing_primary(tmp_path, embedder, milvus_server):
    with pytest.raises(InvalidArgument, match="milvus://HOST:PORT"):
        SearchNode(make_config(tmp_path / "n", vectors=f"milvus-lite:{tmp_path / 'v.db'}", role="search"), embedder=embedder)
    with pytest.raises(FailedPrecondition, match="no facebank primary 'fbnobody' publishes"):
        SearchNode(make_config(tmp_path / "n", vectors=milvus_server.spec, role="search", primary_id="fbnobody"), embedder=embedder)
