"""A mixed load on a running server: many concurrent clients searching,
enrolling and forgetting, with latency percentiles and the server's memory.

    python -m bench.load --server 127.0.0.1:50051 --clients 64 --seconds 300
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facebank.client import Client
from facebank.errors import FacebankError, ResourceExhausted
from facebank.transport import GrpcTransport

PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "faces"


@dataclass
class LoadReport:
    clients: int
    seconds: float
    calls: Counter = field(default_factory=Counter)
    overloaded: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    rss_mb: list[tuple[float, float]] = field(default_factory=list)

    def summary(self) -> dict:
        ops = {}
        for op, values in self.latencies.items():
            ms = np.asarray(values) * 1000
            ops[op] = {"calls": self.calls[op], "overloaded": self.overloaded[op], "p50_ms": round(float(np.percentile(ms, 50)), 1),
                       "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1)}
        rss = [m for _, m in self.rss_mb]
        third = max(1, len(rss) // 3)
        return {
            "clients": self.clients, "seconds": self.seconds, "operations": ops, "errors": self.errors[:20], "error_count": len(self.errors),
            "rss_mb": {"first_third_max": max(rss[:third]) if rss else 0, "last_third_max": max(rss[-third:]) if rss else 0, "peak": max(rss) if rss else 0},
        }


def photos() -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for folder in sorted(PHOTOS.iterdir()):
        if folder.is_dir() and folder.name not in ("groups", "edge_cases"):
            out[folder.name] = [p.read_bytes() for p in sorted(folder.iterdir())]
    return out


def run_load(address: str, *, clients: int = 64, seconds: float = 60.0, server_pid: int | None = None, seed: int = 0, api_key: str | None = None) -> LoadReport:
    """Each client loops: 80% search, 15% enroll (a new identity), 5% forget (one it enrolled)."""
    gallery = photos()
    people = list(gallery)
    report = LoadReport(clients, seconds)
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    setup = Client(GrpcTransport(address, api_key=api_key))
    for who in people:
        setup.enroll(f"base-{who}", [gallery[who][0]])
    setup.close()

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        fb = Client(GrpcTransport(address, api_key=api_key, timeout=120))
        mine: list[str] = []
        serial = 0
        while time.monotonic() < stop:
            roll = rng.random()
            who = rng.choice(people)
            if roll < 0.80:
                op, call = "search", lambda: fb.search(rng.choice(gallery[who]))
            elif roll < 0.95 or not mine:
                serial += 1
                identity = f"load-{number}-{serial}"
                op, call = "enroll", lambda: (fb.enroll(identity, [rng.choice(gallery[who])], accept_low_quality=True), mine.append(identity))
            else:
                identity = mine.pop(rng.randrange(len(mine)))
                op, call = "forget", lambda: fb.forget(identity)
            started = time.monotonic()
            try:
                call()
            except ResourceExhausted:
                with lock:
                    report.overloaded[op] += 1
                time.sleep(0.05 + rng.random() * 0.1)  # back off, as a client should
                continue
            except FacebankError as err:
                with lock:
                    report.errors.append(f"{op}: {type(err).__name__}: {err.message}")
                continue
            with lock:
                report.calls[op] += 1
                report.latencies[op].append(time.monotonic() - started)
        fb.close()

    sampler_stop = threading.Event()

    def sample_memory() -> None:
        if server_pid is None:
            return
        import psutil

        process = psutil.Process(server_pid)
        t0 = time.monotonic()
        while not sampler_stop.wait(1.0):
            report.rss_mb.append((time.monotonic() - t0, process.memory_info().rss / 2**20))

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sampler_stop.set()
    sampler.join()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = run_load(args.server, clients=args.clients, seconds=args.seconds, server_pid=args.server_pid)
    text = json.dumps(report.summary(), indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
