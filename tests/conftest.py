"""Shared fixtures: the real models, real LMDB in temporary directories, a real
gRPC server on a loopback port. Nothing here stands in for the thing a test
checks."""

from __future__ import annotations

import contextlib
import csv
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from facebank.server.runtime import configure_process

configure_process()  # before FAISS loads, as `facebank serve` does

from facebank.client import Client  # noqa: E402
from facebank.embedder import OnnxFaceEmbedder, default_model_spec  # noqa: E402
from facebank.server.app import start  # noqa: E402
from facebank.server.config import ServerConfig  # noqa: E402
from facebank.server.engine import Engine  # noqa: E402
from facebank.transport import GrpcTransport, LocalTransport  # noqa: E402

FACES = Path(__file__).parent / "data" / "faces"
# FACEBANK_SOAK=N multiplies fuzz examples and SIGKILL rounds for a longer campaign
# (the README's reliability figures); 1 in a normal run.
SOAK = max(1, int(os.environ.get("FACEBANK_SOAK", "1")))


@dataclass(frozen=True)
class Photo:
    path: Path
    identity: str
    faces: int

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


def photos() -> list[Photo]:
    with open(FACES / "labels.csv", newline="") as f:
        return [Photo(FACES / row["path"], row["identity"], int(row["faces"])) for row in csv.DictReader(f)]


def single_person_photos() -> dict[str, list[Photo]]:
    """identity -> its single-person photos, in file order."""
    out: dict[str, list[Photo]] = {}
    for p in photos():
        if p.identity and p.faces == 1 and "edge_cases" not in p.path.parts:
            out.setdefault(p.identity, []).append(p)
    return out


@pytest.fixture(scope="session")
def embedder():
    """The default models, loaded once for the whole run (pinned SHA-256 checked)."""
    return OnnxFaceEmbedder(default_model_spec(), device="cpu")


def open_store(path: Path, **kw):
    """A store started as the engine starts one (recovery, indexes), without the
    background worker; tests reach its upkeep as `store.maintenance`."""
    from facebank.index.lifecycle import start_store

    store, maintenance = start_store(path, background=False, **kw)
    store.maintenance = maintenance
    return store


def make_config(data_dir: Path, **overrides) -> ServerConfig:
    """In-process servers speak gRPC only unless a test asks for HTTP (http="127.0.0.1:0")."""
    return ServerConfig(data_dir=data_dir, listen="127.0.0.1:0", **{"http": "off", **overrides})


@pytest.fixture
def engine(tmp_path, embedder):
    eng = Engine(make_config(tmp_path / "data"), embedder=embedder)
    yield eng
    eng.close()


@pytest.fixture
def server(tmp_path, embedder):
    """A real gRPC server on a free loopback port, over a fresh data directory."""
    running = start(make_config(tmp_path / "data"), engine=Engine(make_config(tmp_path / "data"), embedder=embedder))
    yield running
    running.stop(grace=2)


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """A real Milvus standalone server (PyPI `milvus`, embedded), one per test run, with
    garbage collection and its message log's retention set short so that tests can
    watch deleted rows leave its files. Yields its --vectors value."""
    from milvus import MilvusServer

    server = MilvusServer()
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus")))
    for key, value in MILVUS_SHORT_RETENTION.items():
        server.config.set(key, value)
    server.start()
    yield MilvusServerInfo(f"milvus://127.0.0.1:{server.listen_port}", Path(server.config.base_data_dir))
    server.stop()


@dataclass(frozen=True)
class MilvusServerInfo:
    spec: str        # the --vectors value
    base_dir: Path   # everything the server stores


# Milvus keeps deleted rows until compaction, their old files until garbage collection, and every
# write in its message log (rocksmq) until retention: set short here (README: "Vectors in Milvus").
MILVUS_SHORT_RETENTION = {
    "dataCoord.gc.interval": 1, "dataCoord.gc.dropTolerance": 1,  # missingTolerance 1 s crashed 2.3.5 mid-compaction
    "rocksmq.retentionTimeInMinutes": 1, "rocksmq.rocksmqPageSize": 4096, "rocksmq.retentionSizeInMB": 1, "rocksmq.compactionInterval": 5,
}


@pytest.fixture(params=["local", "grpc", "milvus-lite", "milvus"])
def client(request, tmp_path, embedder):
    """The same tests against the in-process engine and against a gRPC server, with the
    vectors in FAISS, in Milvus Lite (in process) and in a Milvus server (over gRPC)."""
    vectors = "faiss"
    if request.param == "milvus-lite":
        vectors = f"milvus-lite:{tmp_path / 'vectors.db'}"
    elif request.param == "milvus":
        vectors = request.getfixturevalue("milvus_server").spec
    config = make_config(tmp_path / "data", vectors=vectors)
    if request.param in ("local", "milvus-lite"):
        fb = Client(LocalTransport(Engine(config, embedder=embedder)))
        yield fb
        fb.close()
    else:
        running = start(config, engine=Engine(config, embedder=embedder))
        fb = Client(GrpcTransport(f"127.0.0.1:{running.port}"))
        yield fb
        fb.close()
        running.stop(grace=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`facebank serve` as its own process, for restarts, signals and the CLI."""

    def __init__(self, data_dir: Path, port: int | None = None, env: dict | None = None, args: tuple = (), listen_host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.listen = f"{listen_host}:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.log = data_dir.parent / f"serve-{self.port}.log"

    def start(self, timeout: float = 60) -> "ServerProcess":
        http = () if "--http" in self.args else ("--http", "off")  # tests that need HTTP ask for it
        cmd = [sys.executable, "-m", "facebank", "serve", "--data", str(self.data_dir), "--listen", self.listen, *http, *self.args]
        self.log_file = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log_file, env=self.env)
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            self.proc.wait(timeout=max(1, deadline - time.monotonic()))
            raise RuntimeError(f"server did not start: {line!r}; log: {self.log.read_text()[-2000:]}")
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.terminate()
        code = self.proc.wait(timeout=60)
        self.log_file.close()
        return code

    def cli(self, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        return run_cli(*args, server=self.address, check=check, env=env)


def run_cli(*args: str, server: str | None = None, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    if server:
        full_env["FACEBANK_SERVER"] = server
    result = subprocess.run([sys.executable, "-m", "facebank", *args], capture_output=True, text=True, env=full_env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"facebank {' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def synthetic_vectors(n, seed=0):
    """The vectors synthetic_faces(..., n, seed=seed) enrolls, drawn again (one row a face)."""
    import numpy as np

    people = np.random.default_rng(seed).standard_normal((n, 512)).astype(np.float32)
    return people / np.linalg.norm(people, axis=1, keepdims=True)


def synthetic_faces(engine, collection, n, identity="", seed=0):
    """n identities of one face each, or (`identity`) one identity of n faces."""
    import numpy as np

    from facebank.index import identities
    from facebank.index.sealed_faces import NewFace

    rng = np.random.default_rng(seed)
    faces = []
    for i in range(n):
        v = rng.standard_normal(512).astype(np.float32)
        v /= np.linalg.norm(v)
        faces.append(NewFace([0, 0, 1, 1], [[0, 0]] * 5, 0.9, {}, v, f"{i + 10**6 + seed * 10**5:064x}", "", "scrfd500m-w600kmbf"))
        if not identity:
            identities.enroll(engine.store, collection, f"synthetic-{i}", "", {}, faces[-1:])
    if identity:
        identities.enroll(engine.store, collection, identity, "", {}, faces)


def assert_derived_tables_match(store) -> None:
    """The catalog's kept-in-step tables (per-collection counts, clusters by identity)
    equal what a scan of the records says."""
    from facebank.index.catalog_tables import COUNTED
    from facebank.index.records import ClusterRecord, loads

    with store.read() as t:
        for table, width in COUNTED.items():
            scanned: dict[bytes, int] = {}
            for key, _ in t._prefix(table, b""):
                scanned[key[:width]] = scanned.get(key[:width], 0) + 1
            stored = {key.split(b"\0", 1)[1]: int.from_bytes(v, "big") for key, v in t._prefix("counts", table.encode() + b"\0")}
            assert stored == scanned, table
        scanned_metadata: dict = {}
        for cid, pair, iid in t.iter_metadata_index():
            scanned_metadata.setdefault((cid, pair), set()).add(iid)
        assert store.metadata._iids == scanned_metadata  # the in-memory view filtered search uses
        named = sorted((c.iid, c.cluster_id) for c in (loads(ClusterRecord, v) for _, v in t._prefix("clusters", b"")) if c.iid)
        indexed = sorted((int.from_bytes(k[:8], "big"), int.from_bytes(k[8:], "big")) for k, _ in t._prefix("identity_clusters", b""))
        assert indexed == named


def anonymous_kb() -> int:
    """This process's anonymous resident memory (Linux: /proc/self/status RssAnon), in KB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon"))


@contextlib.contextmanager
def anonymous_peak():
    """Samples anonymous_kb every 2 ms while the block runs (the heap trimmed before it);
    the dict it yields holds, after the block, "grown": the peak above where it began (KB)."""
    from facebank.index.resident_pages import trim_heap

    trim_heap()
    out = {"before": anonymous_kb(), "grown": 0}
    peak, done = [out["before"]], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], anonymous_kb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield out
    finally:
        done.set()
        sampler.join()
        out["grown"] = peak[0] - out["before"]
