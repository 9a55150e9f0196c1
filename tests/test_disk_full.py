"""A full disk: writes are refused with RESOURCE_EXHAUSTED naming the place and
its free space, health says NOT_SERVING for writes, searches go on, nothing is
half-written, and everything works again once space returns.

The data directory lives on a real, small tmpfs mounted for the test (root is
needed to mount one; the test is skipped where mounting is not permitted)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import FACES, ServerProcess


@pytest.fixture
def small_volume(tmp_path):
    mount = tmp_path / "vol"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); run as root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def fill(volume, leave: int = 0) -> None:
    """Fill the volume up, but `leave` bytes."""
    free = os.statvfs(volume).f_bavail * os.statvfs(volume).f_frsize
    with open(volume / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    while True:  # tmpfs may still have a page or two
        try:
            with open(volume / "filler", "ab") as f:
                f.write(b"\0" * 4096)
        except OSError:
            return


def test_a_full_disk_is_refused_cleanly_and_recovers(small_volume):
    server = ServerProcess(small_volume / "data").start()
    try:
        server.cli("enroll", str(FACES / "obama" / "obama_01.jpg"), "--identity", "obama")
        fill(small_volume)
        refused = server.cli("enroll", str(FACES / "biden" / "biden_01.jpg"), "--identity", "biden", check=False)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert "the disk is full" in refused.stderr and str(small_volume / "data") in refused.stderr and "MiB free" in refused.stderr
        deadline = time.monotonic() + 10
        while health(server.address, "facebank.v1.Enrollment") != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline, "health did not report NOT_SERVING for writes"
            time.sleep(0.2)
        assert health(server.address, "facebank.v1.Search") == health_pb2.HealthCheckResponse.SERVING
        assert "obama" in server.cli("search", str(FACES / "obama" / "obama_02.jpg")).stdout  # reads go on
        (small_volume / "filler").unlink()
        deadline = time.monotonic() + 20
        while health(server.address, "facebank.v1.Enrollment") != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "health did not come back once space returned"
            time.sleep(0.2)
        server.cli("enroll", str(FACES / "biden" / "biden_01.jpg"), "--identity", "biden")
        stats = json.loads(server.cli("stats", "--json").stdout)["collections"][0]
        assert (stats["identities"], stats["faces"], stats["indexed"]) == (2, 2, 2)  # nothing half there
    finally:
        server.stop()
    server = ServerProcess(small_volume / "data", port=server.port).start()  # and it starts again
    try:
        stats = json.loads(server.cli("stats", "--json").stdout)["collections"][0]
        assert (stats["identities"], stats["faces"], stats["indexed"]) == (2, 2, 2)
        assert "biden" in server.cli("search", str(FACES / "biden" / "biden_02.jpg")).stdout
    finally:
        server.stop()
