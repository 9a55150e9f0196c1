"""HTTP against gRPC on the same server and photos: search by photo over gRPC,
over facebank's JSON API (base64 and multipart), over the CompreFace- and
DeepStack-compatible routes, and the engine called in process (no transport),
with 1 and 16 concurrent clients. Latency p50/p99 per route; the transport's
cost is each route's p50 minus the in-process p50 at 1 client."""

from __future__ import annotations

import base64
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "faces"


def run(quick: bool, log=print) -> dict:
    import httpx

    from facebank.client import Client
    from facebank.server.app import start
    from facebank.server.config import ServerConfig
    from facebank.transport import GrpcTransport
    from facebank.v1 import facebank_pb2 as pb

    rounds = 20 if quick else 60
    photos = [p.read_bytes() for p in sorted(PHOTOS.glob("*/*_0[1-3].jpg"))][:8]
    with tempfile.TemporaryDirectory() as tmp:
        config = ServerConfig(data_dir=Path(tmp) / "data", listen="127.0.0.1:0", http="127.0.0.1:0")
        running = start(config)
        engine, http_address = running.engine, f"http://{running.http.address}"
        for folder in sorted(p for p in PHOTOS.iterdir() if p.is_dir() and p.name not in ("groups", "edge_cases")):
            first = sorted(folder.iterdir())[0]
            engine.enrollment.enroll(pb.EnrollRequest(identity_id=folder.name, images=[pb.Image(data=first.read_bytes())]))

        def grpc_client():
            fb = Client(GrpcTransport(f"127.0.0.1:{running.port}"))
            return lambda data: fb.search(data), fb.close

        def http_client(kind: str):
            http = httpx.Client(base_url=http_address, timeout=300)

            def call(data: bytes):
                if kind == "json":
                    r = http.post("/v1/Search/SearchByImage", json={"image": {"data": base64.b64encode(data).decode()}})
                elif kind == "multipart":
                    r = http.post("/v1/Search/SearchByImage", files={"image": ("p.jpg", data, "image/jpeg")})
                elif kind == "compreface":
                    r = http.post("/api/v1/recognition/recognize", files={"file": ("p.jpg", data, "image/jpeg")})
                else:
                    r = http.post("/v1/vision/face/recognize", files={"image": ("p.jpg", data, "image/jpeg")})
                r.raise_for_status()
            return call, http.close

        def in_process():
            return lambda data: engine.search.search_by_image(pb.SearchByImageRequest(image=pb.Image(data=data))), lambda: None

        routes = {"in-process engine": in_process, "gRPC SearchByImage": grpc_client,
                  "HTTP /v1 JSON base64": lambda: http_client("json"), "HTTP /v1 multipart": lambda: http_client("multipart"),
                  "HTTP CompreFace recognize": lambda: http_client("compreface"), "HTTP DeepStack recognize": lambda: http_client("deepstack")}
        rows = []
        for clients in (1, 16):
            for name, make in routes.items():
                latencies = _measure(make, photos, clients, rounds if clients == 1 else max(5, rounds // 8))
                rows.append({"route": name, "clients": clients, "requests": len(latencies),
                             "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
                             "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1)})
                log(f"http: {name}, {clients} client(s): p50 {rows[-1]['p50_ms']} ms, p99 {rows[-1]['p99_ms']} ms")
        running.stop(grace=2)
    base = next(r["p50_ms"] for r in rows if r["route"] == "in-process engine" and r["clients"] == 1)
    for r in rows:
        if r["clients"] == 1:
            r["transport_ms"] = round(r["p50_ms"] - base, 1)
    return {"http": rows}


def _measure(make, photos: list[bytes], clients: int, rounds: int) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        call, close = make()
        try:
            call(photos[0])  # warm-up, not counted
            for i in range(rounds):
                data = photos[(seed + i) % len(photos)]
                t0 = time.perf_counter()
                call(data)
                with lock:
                    latencies.append(time.perf_counter() - t0)
        finally:
            close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies
