"""Bad input over the wire: a precise status, a clear message, nothing stored,
and the server still healthy afterwards."""

from __future__ import annotations

import io
import threading

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import FACES, SOAK, make_config, single_person_photos
from facebank.client import Client
from facebank.errors import FacebankError, InvalidArgument, NotFound, ResourceExhausted
from facebank.server.app import start
from facebank.server.engine import Engine
from facebank.transport import GrpcTransport
from facebank.v1 import facebank_pb2 as pb
from facebank.v1 import facebank_pb2_grpc as stubs

OBAMA = single_person_photos()["obama"]


@pytest.fixture(scope="module")
def running(tmp_path_factory, embedder):
    data = tmp_path_factory.mktemp("bad") / "data"
    config = make_config(data, max_message_mb=4)
    server = start(config, engine=Engine(config, embedder=embedder))
    yield server
    server.stop(grace=2)


@pytest.fixture
def raw(running):
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}", options=[("grpc.max_send_message_length", 64 * 2**20)])
    yield channel
    channel.close()


def status(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def assert_healthy_and_empty(raw, collection: str = "default") -> None:
    health = health_pb2_grpc.HealthStub(raw).Check(health_pb2.HealthCheckRequest(service=""))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    stats = stubs.CollectionsStub(raw).DescribeCollection(pb.CollectionRef(name=collection)).stats
    assert (stats.identities, stats.faces, stats.indexed) == (0, 0, 0)


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def tiled(path, times: int) -> bytes:
    tile = Image.open(path).convert("RGB")
    sheet = Image.new("RGB", (tile.width * times, tile.height * times))
    for i in range(times):
        for j in range(times):
            sheet.paste(tile, (i * tile.width, j * tile.height))
    return jpeg(sheet)


GOOD = OBAMA[0].data
BLANK = jpeg(Image.new("RGB", (400, 300), (90, 120, 150)))


@pytest.mark.parametrize(
    "request_, code, fragment",
    [
        (pb.EnrollRequest(identity_id="a", images=[pb.Image(data=b"")]), "INVALID_ARGUMENT", "empty"),
        (pb.EnrollRequest(identity_id="a", images=[pb.Image(data=GOOD[: len(GOOD) // 3])]), "INVALID_ARGUMENT", "truncated"),
        (pb.EnrollRequest(identity_id="a", images=[pb.Image(data=b"#!/bin/sh\nrm -rf /\n" * 20)]), "INVALID_ARGUMENT", "not an image"),
        (pb.EnrollRequest(identity_id="a", images=[pb.Image(data=BLANK)]), "INVALID_ARGUMENT", "no face"),
        (pb.EnrollRequest(identity_id="a"), "INVALID_ARGUMENT", "no images"),
        (pb.EnrollRequest(identity_id="", images=[pb.Image(data=GOOD)]), "INVALID_ARGUMENT", "identity_id is empty"),
        (pb.EnrollRequest(identity_id="x" * 300, images=[pb.Image(data=GOOD)]), "INVALID_ARGUMENT", "limit is 256"),
        (pb.EnrollRequest(identity_id="bad\x07id", images=[pb.Image(data=GOOD)]), "INVALID_ARGUMENT", "control"),
        (pb.EnrollRequest(identity_id="rtl\u202eid", images=[pb.Image(data=GOOD)]), "INVALID_ARGUMENT", "invisible"),
        (pb.EnrollRequest(identity_id="a", metadata={"k": "v" * 2000}, images=[pb.Image(data=GOOD)]), "INVALID_ARGUMENT", "limit is 1024"),
        (pb.EnrollRequest(collection="nope", identity_id="a", images=[pb.Image(data=GOOD)]), "NOT_FOUND", "does not exist"),
        (pb.EnrollRequest(collection="../etc", identity_id="a", images=[pb.Image(data=GOOD)]), "INVALID_ARGUMENT", "not a valid name"),
        (pb.EnrollRequest(identity_id="a", images=[pb.Image(data=GOOD)], quality_filter=7), "INVALID_ARGUMENT", "quality_filter"),
    ],
)
def test_bad_enrollments(raw, request_, code, fragment):
    got, details = status(lambda: stubs.EnrollmentStub(raw).Enroll(request_))
    assert got.name == code and fragment in details, details
    assert_healthy_and_empty(raw)


@pytest.mark.parametrize(
    "request_, code, fragment",
    [
        (pb.SearchByImageRequest(image=pb.Image(data=GOOD), options=pb.SearchOptions(top_k=4294967295)), "INVALID_ARGUMENT", "top_k"),
        (pb.SearchByImageRequest(image=pb.Image(data=GOOD), options=pb.SearchOptions(top_k=101)), "INVALID_ARGUMENT", "top_k"),
        (pb.SearchByImageRequest(image=pb.Image(data=GOOD), options=pb.SearchOptions(threshold=float("nan"))), "INVALID_ARGUMENT", "threshold"),
        (pb.SearchByImageRequest(image=pb.Image(data=GOOD), options=pb.SearchOptions(threshold=7)), "INVALID_ARGUMENT", "threshold"),
        (pb.SearchByImageRequest(image=pb.Image(data=GOOD), max_faces=100000), "INVALID_ARGUMENT", "max_faces"),
        (pb.SearchByImageRequest(collection="nope", image=pb.Image(data=GOOD)), "NOT_FOUND", "nope"),
        (pb.SearchByImageRequest(image=pb.Image(data=jpeg(Image.new("RGB", (20000, 16))))), "INVALID_ARGUMENT", "pixels a side"),
    ],
)
def test_bad_searches(raw, request_, code, fragment):
    got, details = status(lambda: stubs.SearchStub(raw).SearchByImage(request_))
    assert got.name == code and fragment in details, details
    assert_healthy_and_empty(raw)


def test_embedding_queries_are_checked(raw):
    search = stubs.SearchStub(raw).SearchByEmbedding
    for values, fragment in (([1.0] * 511, "512-dimensional"), ([float("nan")] * 512, "NaN"), ([0.0] * 512, "all zeros")):
        got, details = status(lambda: search(pb.SearchByEmbeddingRequest(queries=[pb.Embedding(values=values)])))
        assert got == grpc.StatusCode.INVALID_ARGUMENT and fragment in details
    got, _ = status(lambda: search(pb.SearchByEmbeddingRequest(queries=[pb.Embedding(values=[1.0] * 512)] * 1025)))
    assert got == grpc.StatusCode.INVALID_ARGUMENT
    packed = (
        (np.ones(511, "<f4").tobytes(), "not whole rows of 512-dimensional"),
        (np.full(512, np.nan, "<f4").tobytes(), "NaN"),
        (np.zeros((2, 512), "<f4").tobytes(), "all zeros"),
        (np.ones((1025, 512), "<f4").tobytes(), "at most 1024"),
    )
    for data, fragment in packed:
        got, details = status(lambda: search(pb.SearchByEmbeddingRequest(queries_f32=data)))
        assert got == grpc.StatusCode.INVALID_ARGUMENT and fragment in details, details
    both = pb.SearchByEmbeddingRequest(queries=[pb.Embedding(values=[1.0] * 512)], queries_f32=np.ones(512, "<f4").tobytes())
    got, details = status(lambda: search(both))
    assert got == grpc.StatusCode.INVALID_ARGUMENT and "not both" in details
    assert_healthy_and_empty(raw)


def test_zero_faces_and_hundreds_of_faces(raw):
    search = stubs.SearchStub(raw).SearchByImage
    assert list(search(pb.SearchByImageRequest(image=pb.Image(data=BLANK))).faces) == []
    crowd = tiled(FACES / "groups" / "multiface.jpg", 5)  # 150 faces in one photo
    result = search(pb.SearchByImageRequest(image=pb.Image(data=crowd)))
    everyone = search(pb.SearchByImageRequest(image=pb.Image(data=crowd), quality_filter=pb.QUALITY_FILTER_NONE))
    assert len(everyone.faces) > 64 and len(result.faces) + result.faces_below_quality == len(everyone.faces)  # every face, none cut
    fewer = search(pb.SearchByImageRequest(image=pb.Image(data=crowd), max_faces=10))
    assert len(fewer.faces) + fewer.faces_below_quality == 10  # the 10 largest, as asked


def test_oversized_message_is_resource_exhausted(raw):
    huge = pb.EnrollRequest(identity_id="a", images=[pb.Image(data=b"\xff" * (5 * 2**20))])
    got, details = status(lambda: stubs.EnrollmentStub(raw).Enroll(huge))
    assert got == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_healthy_and_empty(raw)


def test_bulk_enroll_answers_every_item_and_keeps_going(raw):
    items = [
        pb.BulkEnrollItem(item_id="good", identity_id="obama", image=pb.Image(data=GOOD)),
        pb.BulkEnrollItem(item_id="junk", identity_id="obama", image=pb.Image(data=b"junk")),
        pb.BulkEnrollItem(item_id="nobody", identity_id="obama", image=pb.Image(data=BLANK)),
        pb.BulkEnrollItem(item_id="bad-id", identity_id="", image=pb.Image(data=GOOD)),
        pb.BulkEnrollItem(item_id="no-coll", collection="nope", identity_id="obama", image=pb.Image(data=GOOD)),
        pb.BulkEnrollItem(item_id="second", identity_id="obama", image=pb.Image(data=OBAMA[1].data)),
    ]
    results = list(stubs.EnrollmentStub(raw).BulkEnroll(iter(items)))
    assert [r.item_id for r in results] == [i.item_id for i in items]
    outcome = {r.item_id: (r.WhichOneof("outcome"), r.failure.reason or r.failure.code) for r in results}
    assert outcome == {
        "good": ("enrolled", ""), "junk": ("failure", "UNDECODABLE_IMAGE"), "nobody": ("failure", "NO_FACE"),
        "bad-id": ("failure", "BAD_ID"), "no-coll": ("failure", "NOT_FOUND"), "second": ("enrolled", ""),
    }
    stats = stubs.CollectionsStub(raw).DescribeCollection(pb.CollectionRef(name="default")).stats
    assert (stats.identities, stats.faces, stats.indexed) == (1, 2, 2)
    stubs.IdentitiesStub(raw).Forget(pb.ForgetRequest(identity_id="obama"))


def test_two_concurrent_forgets_of_one_identity(running):
    fb = Client(GrpcTransport(f"127.0.0.1:{running.port}"))
    fb.enroll("twice", [OBAMA[0].path])
    outcomes: list[object] = []

    def forget():
        try:
            outcomes.append(fb.forget("twice"))
        except FacebankError as err:
            outcomes.append(err)

    threads = [threading.Thread(target=forget) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    receipts = [o for o in outcomes if isinstance(o, pb.ForgetReceipt)]
    errors = [o for o in outcomes if isinstance(o, FacebankError)]
    assert len(receipts) == 1 and len(errors) == 1 and isinstance(errors[0], NotFound)
    fb.close()


def test_overload_is_answered_resource_exhausted(tmp_path, embedder):
    config = make_config(tmp_path / "data", max_concurrent_rpcs=2, workers=8)
    server = start(config, engine=Engine(config, embedder=embedder))
    fb = Client(GrpcTransport(f"127.0.0.1:{server.port}"))
    crowd = tiled(FACES / "groups" / "multiface.jpg", 3)
    outcomes: list[str] = []

    def search():
        try:
            fb.search(crowd)
            outcomes.append("ok")
        except ResourceExhausted:
            outcomes.append("busy")

    threads = [threading.Thread(target=search) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "busy" in outcomes and "ok" in outcomes and len(outcomes) == 12
    assert fb.search(OBAMA[0].path).faces  # and it serves again afterwards
    fb.close()
    server.stop(grace=2)


class AnnouncingEmbedder:
    """The real embedder, saying when it is first asked for faces: the stop below
    then lands inside the request, however fast the machine."""

    def __init__(self, inner):
        self.inner, self.started = inner, threading.Event()

    def analyze(self, *args, **kwargs):
        self.started.set()
        return self.inner.analyze(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_graceful_shutdown_finishes_in_flight_requests(tmp_path, embedder):
    config = make_config(tmp_path / "data")
    announcing = AnnouncingEmbedder(embedder)
    server = start(config, engine=Engine(config, embedder=announcing))
    fb = Client(GrpcTransport(f"127.0.0.1:{server.port}"))
    photos = [p.path for p in single_person_photos()["obama"]] * 2
    result: list = []
    worker = threading.Thread(target=lambda: result.append(fb.enroll("obama", photos, accept_low_quality=True)))
    worker.start()
    assert announcing.started.wait(60)  # the enrollment is running
    server.stop(grace=60)
    worker.join()
    assert result and result[0].identity.face_count == len(single_person_photos()["obama"])
    fb.close()


def test_shutdown_past_grace_waits_for_handlers_then_closes(tmp_path, embedder):
    """grace=0 cancels the call, but the handler is inside its write: the data
    closes after it, so the enrollment is stored whole or not at all."""
    config = make_config(tmp_path / "data")
    announcing = AnnouncingEmbedder(embedder)
    others = set(threading.enumerate())  # other tests' servers may be running
    server = start(config, engine=Engine(config, embedder=announcing))
    fb = Client(GrpcTransport(f"127.0.0.1:{server.port}"))
    photos = [p.path for p in OBAMA] * 2
    outcome: list = []

    def enroll():
        try:
            outcome.append(fb.enroll("obama", photos, accept_low_quality=True))
        except FacebankError as e:
            outcome.append(e)

    worker = threading.Thread(target=enroll)
    worker.start()
    assert announcing.started.wait(60)
    server.stop(grace=0)
    assert not [t.name for t in threading.enumerate() if t not in others and t.name.startswith("facebank-rpc")]
    worker.join()
    fb.close()
    reopened = Engine(config, embedder=embedder)
    try:
        stored = reopened.identities.get_identity(pb.IdentityRef(collection="default", identity_id="obama"))
        assert stored.face_count == len(OBAMA)
    except NotFound:
        assert isinstance(outcome[0], FacebankError)  # nothing stored, and the client was told
    finally:
        reopened.close()


ids = st.text(min_size=0, max_size=300)
names = st.one_of(st.just("default"), st.text(max_size=80))


@settings(max_examples=200 * SOAK, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(collection=names, identity=ids, meta=st.dictionaries(st.text(max_size=140), st.text(max_size=1100), max_size=70),
       top_k=st.integers(0, 2**32 - 1), threshold=st.floats(allow_nan=True, allow_infinity=True), page=st.text(max_size=40))
def test_fuzz_request_validation_never_fails_inside(engine, collection, identity, meta, top_k, threshold, page):
    """Random fields through the engine: each call succeeds or raises one of our
    typed errors (a status with a message); nothing unexpected, nothing half-stored."""
    calls = [
        lambda: engine.enrollment.enroll(pb.EnrollRequest(collection=collection, identity_id=identity, metadata=meta, images=[pb.Image(data=BLANK)])),
        lambda: engine.search.search_by_embedding(pb.SearchByEmbeddingRequest(
            collection=collection, queries=[pb.Embedding(values=np.ones(512).tolist())], options=pb.SearchOptions(top_k=top_k, threshold=threshold, filter=meta))),
        lambda: engine.identities.get_identity(pb.IdentityRef(collection=collection, identity_id=identity)),
        lambda: engine.identities.list_identities(pb.ListIdentitiesRequest(collection=collection, page_token=page, page_size=top_k % 5000)),
        lambda: engine.identities.update_identity(pb.UpdateIdentityRequest(collection=collection, identity_id=identity, set_metadata=meta)),
        lambda: engine.collections.create_collection(pb.CreateCollectionRequest(name=collection, threshold=threshold)),
    ]
    for call in calls:
        try:
            call()
        except FacebankError as err:
            assert err.code in {"INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS"} and err.message
    stats = engine.store.stats(engine.store.collection("default"))
    assert stats["faces"] == stats["indexed"] == 0


def test_invalid_argument_carries_a_machine_readable_reason(running):
    fb = Client(GrpcTransport(f"127.0.0.1:{running.port}"))
    with pytest.raises(InvalidArgument) as err:
        fb.enroll("a", [BLANK])
    assert err.value.reason == "NO_FACE"
    fb.close()
