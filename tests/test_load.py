"""A bounded load test on loopback: 64 concurrent clients mixing search,
enroll and forget. Only deliberate overload answers are allowed; memory must
stay steady. The longer run behind the README's figures is `python -m bench.load`."""

from __future__ import annotations

import json
import os

from bench.load import run_load
from conftest import ServerProcess

SECONDS = float(os.environ.get("FACEBANK_LOAD_SECONDS", "45"))


def test_64_clients_mixed_load(tmp_path):
    server = ServerProcess(tmp_path / "data").start()
    try:
        report = run_load(server.address, clients=64, seconds=SECONDS, server_pid=server.proc.pid)
        summary = report.summary()
        print(json.dumps(summary, indent=2))
        assert report.errors == [], report.errors[:5]
        assert report.calls["search"] > 0 and report.calls["enroll"] > 0 and report.calls["forget"] > 0
        rss = summary["rss_mb"]
        assert rss["last_third_max"] <= rss["first_third_max"] * 1.25 + 64, rss  # steady, not growing
        stats = json.loads(server.cli("stats", "--json").stdout)["collections"][0]
        assert stats["faces"] == stats["indexed"]
    finally:
        assert server.stop() == 0
