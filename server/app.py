"""Assembling and running the gRPC server.

Secure by default: on a loopback address the server may run without API
keys; on any other address it refuses to start until a key exists (create
one with `facebank keys create --data DIR`). Requests beyond
`max_concurrent_rpcs` are answered RESOURCE_EXHAUSTED instead of queueing
without bound, and a shutdown lets in-flight requests finish.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from facebank.errors import FailedPrecondition, Reason
from facebank.server.auth import ApiKeys
from facebank.server.config import ServerConfig
from facebank.server.engine import Engine
from facebank.server.grpc_api import SERVICES, Gate, generic_handlers

log = logging.getLogger(__name__)

_NO_KEYS = ("refusing to listen on {listen} without API keys: anyone on the network could read and change biometric "
            "data. Create an admin key first: facebank keys create --data {data} --role admin, or listen on 127.0.0.1")
GRACE_S = 30.0
DRAIN_S = 60.0


@dataclass
class RunningServer:
    server: grpc.Server
    engine: Engine
    health: health.HealthServicer
    workers: futures.ThreadPoolExecutor
    address: str
    port: int
    http: "HttpServer | None" = None

    def stop(self, grace: float = GRACE_S) -> None:
        """Stop accepting calls, let in-flight ones finish (up to `grace` s), close the data.

        Past the grace gRPC cancels the calls, but a handler thread cannot be
        interrupted: it is still inside its transaction. The data closes only
        once the handlers are out (up to DRAIN_S more), so each write commits
        whole or not at all instead of failing on a closed environment.
        """
        self.health.enter_graceful_shutdown()
        self.engine.begin_shutdown()
        if self.http is not None:
            self.http.stop(grace)
        self.server.stop(grace).wait()
        if not _drain(self.workers, DRAIN_S):
            log.warning("request handlers still running %.0f s after the grace period; closing the data under them", DRAIN_S)
        self.engine.close()


def _drain(workers: futures.ThreadPoolExecutor, timeout: float) -> bool:
    waiter = threading.Thread(target=workers.shutdown, kwargs={"wait": True}, daemon=True)
    waiter.start()
    waiter.join(timeout)
    return not waiter.is_alive()


def start(config: ServerConfig, *, engine: Engine | None = None) -> RunningServer:
    """Bind the port first, then open the data: a busy port or a bad address
    fails before anything is created on disk."""
    host, port = config.host_port()
    max_bytes = config.max_message_mb * 2**20
    workers = futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="facebank-rpc")
    server = grpc.server(
        workers,
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            ("grpc.so_reuseport", 0),
            # Clients' BDP and keepalive pings during a long search are not abuse: without
            # these the server answers them with GOAWAY "too_many_pings" and drops the call.
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 0),
        ],
    )
    address = f"{'[' + host + ']' if ':' in host else host}:{port}"
    try:
        bound = server.add_secure_port(address, _credentials(config)) if config.tls_cert else server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        workers.shutdown(wait=False)
        raise FailedPrecondition(f"cannot listen on {config.listen}: the port is in use or the address is not this machine's; nothing was changed")
    try:
        http_socket = bind_http(config) if config.http_enabled else None
    except BaseException:
        server.stop(0)
        workers.shutdown(wait=False)
        raise
    try:
        node = config.role == "search"
        if engine is None and not node and not config.all_loopback and not (Path(config.data_dir) / "catalog" / "data.mdb").exists():
            raise FailedPrecondition(_NO_KEYS.format(listen=config.listen, data=config.data_dir))
        if engine is None and config.vectors != "faiss" and not node:  # an unreachable Milvus is refused before the data directory is touched
            from facebank.index.milvus_vectors import MilvusTarget

            MilvusTarget(config.vectors, prefix="").close()
        if engine is None and node:
            from facebank.server.search_node import SearchNode

            engine = SearchNode(config)
        engine = engine or Engine(config)
    except BaseException:
        server.stop(0)
        workers.shutdown(wait=False)
        if http_socket is not None:
            http_socket.close()
        raise
    try:
        keys = engine.api_keys()
        if not config.all_loopback and not keys.any():
            if engine.role == "search":
                raise FailedPrecondition(f"refusing to listen on {config.listen} without API keys: the primary has published none; "
                                         "create one on the primary (facebank keys create --role search), or listen on 127.0.0.1")
            raise FailedPrecondition(_NO_KEYS.format(listen=config.listen, data=config.data_dir))
        health_servicer = health.HealthServicer()
        places = [] if engine.role == "search" else [Path(config.data_dir), config.resolved_keys_dir]
        write_health = WriteHealth(health_servicer, places)
        server.add_generic_rpc_handlers(generic_handlers(engine, Gate(keys, open_allowed=config.is_loopback()), write_health.error))
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = [s.full_name for s in SERVICES]
        for name in ["", *names]:
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        server.start()
        http = HttpServer(http_socket, engine, keys, config) if http_socket is not None else None
    except BaseException:
        server.stop(0)
        engine.close()
        if http_socket is not None:
            http_socket.close()
        raise
    return RunningServer(server, engine, health_servicer, workers, f"{host}:{bound}", bound, http)


def bind_http(config: ServerConfig) -> socket.socket:
    """The HTTP listening socket, bound before anything is created (a busy port: one line)."""
    host, port = config.host_port(config.http, "--http")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on connections of such sockets; without it a
    # keep-alive client waited out its delayed ACK (40 ms) on every answer written in two parts.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise FailedPrecondition(f"cannot listen on {config.http} for HTTP ({err.strerror}): the port is in use or the address is not "
                                 "this machine's; choose another with --http HOST:PORT, or --http off; nothing was changed") from None
    return sock


class HttpServer:
    """uvicorn serving the HTTP API (server/http_api.py) on its own thread, same engine."""

    def __init__(self, sock: socket.socket, engine: Engine, keys: ApiKeys, config: ServerConfig) -> None:
        import uvicorn

        from facebank.server.http_api import build_app

        app = build_app(engine, keys, open_allowed=config.all_loopback, max_bytes=config.max_message_mb * 2**20,
                        max_concurrent=config.max_concurrent_rpcs)
        self.socket = sock
        self.port = sock.getsockname()[1]
        self.address = f"{config.host_port(config.http, '--http')[0]}:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                                     timeout_graceful_shutdown=int(GRACE_S)))
        self._server.install_signal_handlers = lambda: None  # the process's signals are serve_forever's
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="facebank-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self, grace: float) -> None:
        self._server.should_exit = True
        self._thread.join(grace + 5)
        self.socket.close()


class WriteHealth:
    """Writes that failed for a full disk turn the writing services NOT_SERVING in
    the health service, until a probe write succeeds again (checked every few seconds);
    searches stay SERVING. Nothing half-written is left by the failed writes."""

    SERVICES = ("facebank.v1.Enrollment", "facebank.v1.Clusters", "facebank.v1.Identities")
    CHECK_S = 2.0
    PROBE_BYTES = 4 * 2**20

    def __init__(self, health_servicer: health.HealthServicer, places: list[Path]) -> None:
        self.health = health_servicer
        self.places = places
        self._lock = threading.Lock()
        self._watching = False

    def error(self, err) -> None:
        if err.reason != Reason.DISK_FULL:
            return
        with self._lock:
            if self._watching:
                return
            self._watching = True
        log.error("writes fail for a full disk: %s; reporting NOT_SERVING for writes until space returns", err.message)
        for name in self.SERVICES:
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        threading.Thread(target=self._watch, name="facebank-disk-watch", daemon=True).start()

    def _watch(self) -> None:
        while not all(self._probe(place) for place in self.places):
            time.sleep(self.CHECK_S)
        for name in self.SERVICES:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("disk space is back: writes are SERVING again")
        with self._lock:
            self._watching = False

    def _probe(self, place: Path) -> bool:
        probe = place / ".facebank-space-probe"
        try:
            with open(probe, "wb") as f:
                f.write(bytes(self.PROBE_BYTES))
                f.flush()
                os.fsync(f.fileno())
            return True
        except OSError:
            return False
        finally:
            probe.unlink(missing_ok=True)


def _credentials(config: ServerConfig) -> grpc.ServerCredentials:
    if not config.tls_key:
        raise FailedPrecondition("--tls-cert needs --tls-key too")
    key, cert = config.tls_key.read_bytes(), config.tls_cert.read_bytes()
    ca = config.tls_client_ca.read_bytes() if config.tls_client_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def serve_forever(config: ServerConfig, on_ready=None) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully."""
    running = start(config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if on_ready:
        on_ready(running)
    stop.wait()
    log.info("shutting down: finishing in-flight requests")
    running.stop()
