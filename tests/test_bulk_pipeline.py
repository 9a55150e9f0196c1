"""The bulk pipeline (server/bulk_pipeline.py) against a plain loop: same answers in
the same order, errors kept to their own items, no wait for a full group, and a
real BulkEnroll stream driven one item at a time."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from conftest import single_person_photos
from facebank.client import Client
from facebank.server.bulk_pipeline import BULK_GROUP, pipelined
from facebank.transport import GrpcTransport
from facebank.v1 import facebank_pb2 as pb


def test_same_results_in_the_same_order_as_a_plain_loop_in_bounded_groups():
    groups = []

    def double(group):
        groups.append(len(group))
        return [x * 2 for x in group]

    out = list(pipelined(iter(range(500)), double))
    assert out == [(x, x * 2) for x in range(500)]
    assert max(groups) <= BULK_GROUP and sum(groups) == 500


def test_a_failing_group_fails_only_its_own_items():
    def prepare(group):
        if 13 in group:
            raise ValueError("bad group")
        return [x + 1 for x in group]

    out = dict(pipelined(iter(range(40)), prepare))
    failed = [x for x, r in out.items() if isinstance(r, ValueError)]
    assert 13 in failed and len(failed) <= BULK_GROUP
    assert all(out[x] == x + 1 for x in out if x not in failed)


def test_an_item_sent_after_the_previous_answer_is_answered_without_waiting_for_a_group():
    answered: queue.Queue = queue.Queue()

    def one_at_a_time():
        for i in range(5):
            yield i
            assert answered.get(timeout=10) == i, "the pipeline held an answer back, waiting for more items"

    results = []

    def consume():
        for item, result in pipelined(one_at_a_time(), lambda g: [x for x in g]):
            results.append(result)
            answered.put(item)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive() and results == [0, 1, 2, 3, 4]


def test_a_broken_stream_answers_what_arrived_then_raises():
    def stream():
        yield from range(3)
        raise ConnectionError("client went away")

    got = []
    with pytest.raises(ConnectionError):
        for item, _ in pipelined(stream(), lambda g: g):
            got.append(item)
    assert got == [0, 1, 2]


def test_a_caller_that_stops_early_ends_both_threads():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = {t.name for t in threading.enumerate()}
    answers = pipelined(endless(), lambda g: g)
    assert [next(answers)[0] for _ in range(3)] == [0, 1, 2]
    answers.close()
    deadline = time.monotonic() + 5
    while any(t.name.startswith("facebank-bulk") and t.name not in before for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name.startswith("facebank-bulk")]


def test_bulk_enroll_over_grpc_one_item_at_a_time_and_all_at_once_give_the_same_catalog(server):
    shots = [s for shots in single_person_photos().values() for s in shots[:2]]
    items = [pb.BulkEnrollItem(item_id=str(i), identity_id=s.identity, image=pb.Image(data=s.data)) for i, s in enumerate(shots)]
    answered: queue.Queue = queue.Queue()

    def one_at_a_time():
        for item in items:
            yield item
            answered.get(timeout=60)

    with Client(GrpcTransport(f"127.0.0.1:{server.port}")) as fb:
        fb.create_collection("stepwise")
        stepwise = []
        for result in fb.bulk_enroll(pb.BulkEnrollItem(**{**_fields(it), "collection": "stepwise"}) for it in one_at_a_time()):
            stepwise.append(result)
            answered.put(result.item_id)
        at_once = list(fb.bulk_enroll(iter(items)))
        assert [r.item_id for r in stepwise] == [r.item_id for r in at_once] == [it.item_id for it in items]
        assert all(r.WhichOneof("outcome") == "enrolled" for r in stepwise + at_once), [r.failure for r in stepwise + at_once if r.HasField("failure")]
        for collection in ("stepwise", "default"):
            people = {i.id: i.face_count for i in fb.list_identities(collection=collection)}
            assert people == {s.identity: sum(1 for x in shots if x.identity == s.identity) for s in shots}


def _fields(item: pb.BulkEnrollItem) -> dict:
    return {"item_id": item.item_id, "identity_id": item.identity_id, "image": item.image}
