"""SIGKILL at random moments during bulk enrollment and during forgets: every
acknowledged write is there after a restart, nothing is half there, and a
forgotten identity stays forgotten."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

from conftest import SOAK, ServerProcess, single_person_photos
from facebank.client import Client
from facebank.errors import FacebankError
from facebank.transport import GrpcTransport
from facebank.v1 import facebank_pb2 as pb

ROUNDS = 3 * SOAK
SHOTS = [p for shots in single_person_photos().values() for p in shots]


def consistent(server: ServerProcess) -> dict:
    """Checks that hold after any crash; returns identity -> image hashes."""
    fb = Client(GrpcTransport(server.address))
    try:
        stats = fb.describe_collection().stats
        assert stats.faces == stats.indexed, "catalog and index disagree"
        identities = {}
        for identity in fb.list_identities():
            assert identity.face_count == len(identity.faces) >= 1, identity.id  # never half an identity
            identities[identity.id] = {f.image_sha256 for f in identity.faces}
        assert sum(len(v) for v in identities.values()) == stats.faces
        return identities
    finally:
        fb.close()


@pytest.mark.parametrize("seed", range(ROUNDS))
def test_sigkill_during_bulk_enrollment(tmp_path, seed):
    import hashlib

    rng = random.Random(seed)
    data = tmp_path / "data"
    server = ServerProcess(data).start()
    items = [
        pb.BulkEnrollItem(item_id=f"p{i}", identity_id=f"person-{i % 12}", image=pb.Image(data=shot.data, source_ref=str(i)), quality_filter=pb.QUALITY_FILTER_NONE)
        for i, shot in enumerate(SHOTS * 2)
    ]
    sha = {item.item_id: hashlib.sha256(item.image.data).hexdigest() for item in items}
    acknowledged: list[str] = []
    fb = Client(GrpcTransport(server.address))
    # Kill after a random number of acknowledgements, not after a random time:
    # on a fast machine a timed kill can land after the last item.
    kill_after = rng.randrange(1, len(items) // 2)
    reached = threading.Event()

    def stream():
        try:
            for result in fb.bulk_enroll(items):
                if result.HasField("enrolled"):
                    acknowledged.append(result.item_id)
                if len(acknowledged) >= kill_after:
                    reached.set()
        except FacebankError:
            pass  # the server died under us
        finally:
            reached.set()

    worker = threading.Thread(target=stream)
    worker.start()
    assert reached.wait(120)
    time.sleep(rng.uniform(0.0, 0.05))  # somewhere inside the next items
    server.kill()
    worker.join()
    fb.close()
    restarted = ServerProcess(data, port=server.port).start()
    try:
        identities = consistent(restarted)
        for item_id in acknowledged:
            item = next(i for i in items if i.item_id == item_id)
            assert sha[item_id] in identities.get(item.identity_id, set()), f"acknowledged {item_id} was lost"
        assert len(acknowledged) < len(items), "the kill came too late to test anything"
        # the rest can be sent again and lands exactly once
        again = Client(GrpcTransport(restarted.address))
        results = list(again.bulk_enroll(items))
        assert all(r.HasField("enrolled") for r in results)
        again.close()
        after = consistent(restarted)
        assert sum(len(v) for v in after.values()) == len({(i.identity_id, sha[i.item_id]) for i in items})
    finally:
        restarted.stop()


@pytest.mark.parametrize("seed", range(ROUNDS))
def test_sigkill_during_a_sequence_of_forgets(tmp_path, seed):
    rng = random.Random(100 + seed)
    data = tmp_path / "data"
    server = ServerProcess(data).start()
    fb = Client(GrpcTransport(server.address))
    people = 60
    for i in range(people):
        fb.enroll(f"person-{i}", [SHOTS[i % len(SHOTS)].path], accept_low_quality=True)
    forgotten: list[str] = []
    kill_after = rng.randrange(1, people - 10)
    reached = threading.Event()

    def forget_all():
        for i in range(people):
            try:
                fb.forget(f"person-{i}")
            except FacebankError:
                return
            forgotten.append(f"person-{i}")
            if len(forgotten) == kill_after:
                reached.set()

    worker = threading.Thread(target=forget_all)
    worker.start()
    assert reached.wait(120)
    time.sleep(rng.uniform(0.0, 0.02))  # somewhere inside the next forget
    server.kill()
    worker.join()
    fb.close()
    restarted = ServerProcess(data, port=server.port).start()
    try:
        identities = consistent(restarted)
        assert not set(forgotten) & set(identities), "an acknowledged forget came back"
        receipts = json.loads(restarted.cli("receipts", "--json").stdout)
        assert receipts["chain_valid"] and len(receipts["receipts"]) >= len(forgotten)
        assert len(forgotten) < people, "the kill came too late to test anything"
    finally:
        restarted.stop()


def test_sigterm_during_a_long_index_rebuild_exits_at_once_and_the_next_start_redoes_it(tmp_path):
    """A rebuild that trains for minutes (here: made to last 300 s) does not hold a SIGTERM
    up: the server exits within seconds (it waited 60 s for the worker, then closed the
    data under it), and the next start rebuilds."""
    data = tmp_path / "data"
    server = ServerProcess(data, env={"FACEBANK_DELAY_AT": "rebuild:build=300"}).start()
    with Client(GrpcTransport(server.address)) as fb:
        fb.enroll("obama", [SHOTS[0].path])
        fb.update_collection("default", index="hnsw")  # flat -> hnsw: a rebuild in the background
    deadline = time.monotonic() + 30
    while "rebuilding collection" not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "rebuilding collection" in server.log.read_text()
    time.sleep(1)
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 15
    server = ServerProcess(data).start()
    try:
        with Client(GrpcTransport(server.address)) as fb:
            assert fb.search(SHOTS[1].path if SHOTS[1].identity == "obama" else SHOTS[0].path).faces[0].matches[0].identity_id == "obama"
            deadline = time.monotonic() + 60
            while fb.describe_collection().stats.active_index != pb.INDEX_KIND_HNSW and time.monotonic() < deadline:
                time.sleep(0.5)
            assert fb.describe_collection().stats.active_index == pb.INDEX_KIND_HNSW
    finally:
        server.stop()


def test_sigterm_during_a_long_compaction_exits_at_once_and_the_next_start_compacts(tmp_path, embedder):
    """A compaction copies the whole catalog (minutes at 1M faces; here made to last
    300 s). SIGTERM leaves it: the server exits within seconds, nothing is lost, and the
    compaction the forget promised is still due and runs after the restart."""
    import subprocess
    import sys

    from conftest import run_cli

    data = tmp_path / "data"
    server = ServerProcess(data, env={"FACEBANK_DELAY_AT": "compact:copy=300"}).start()
    with Client(GrpcTransport(server.address)) as fb:
        for shot in SHOTS[:4]:
            fb.enroll(shot.identity, [shot.path])
        fb.forget(SHOTS[0].identity)
    compact = subprocess.Popen([sys.executable, "-m", "facebank", "compact"], env={**__import__("os").environ, "FACEBANK_SERVER": server.address},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scratch = data / "catalog.compact"
    deadline = time.monotonic() + 30
    while not scratch.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert scratch.exists(), "the compaction did not start"
    time.sleep(1)
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 15, "SIGTERM waited for the compaction"
    _, err = compact.communicate(timeout=30)
    assert compact.returncode != 0 and "Traceback" not in err and err.strip()
    server = ServerProcess(data).start()
    try:
        with Client(GrpcTransport(server.address)) as fb:
            kept = {s.identity for s in SHOTS[:4]} - {SHOTS[0].identity}
            assert {i.id for i in fb.list_identities()} == kept
        assert not scratch.exists()
        assert run_cli("check", server=server.address).returncode == 0
    finally:
        server.stop()
    from conftest import make_config
    from facebank.index.forget import PURGE_DUE
    from facebank.server.engine import Engine

    engine = Engine(make_config(data, background=False), embedder=embedder)
    try:
        with engine.store.read() as t:
            assert t.get_meta(PURGE_DUE) is not None, "the promised compaction was forgotten"
        engine.maintenance.compact()
        with engine.store.read() as t:
            assert t.get_meta(PURGE_DUE) is None
    finally:
        engine.close()
