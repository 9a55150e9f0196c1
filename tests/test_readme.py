"""The README stays true: CI runs its test command, and its tour works as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def test_ci_runs_the_readme_test_command():
    setup = shell_blocks(section("Set up"))
    assert len(setup) == 2, "the README gives exactly two set-up commands"
    assert "facebank serve" in setup[0] and "pip install -e ." in setup[0]
    test_command = setup[1].strip()
    assert "pytest" in test_command and "[test]" in test_command
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci


def test_the_tour_works_as_written(tmp_path):
    tour = shell_blocks(section("A short tour"))[0].strip().splitlines()
    assert tour[0].startswith(". .venv/bin/activate")
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    server = ServerProcess(tmp_path / "facebank-data").start()
    env = {**os.environ, "FACEBANK_SERVER": server.address, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    outputs = {}
    try:
        for line in tour[1:]:  # the activate line is what PATH does here
            result = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, f"{line!r} failed: {result.stderr[-1500:]}"
            outputs[line] = result.stdout
    finally:
        server.stop()
    by_command = {line.split()[1] if line.startswith("facebank") else line: out for line, out in outputs.items()}
    assert "enrolled 4, already enrolled 0" in by_command["enroll"]
    group = outputs["facebank search tests/data/faces/groups/obama_and_biden.jpg"]
    assert "obama" in group and "biden" in group and "unknown" in group
    assert '"identity": "obama"' in outputs["facebank search tests/data/faces/obama/obama_02.jpg --json"]
    assert "same person" in outputs["facebank verify tests/data/faces/obama/obama_03.jpg tests/data/faces/obama/obama_04.jpg"]
    assert "unknown" in outputs["facebank search tests/data/faces/obama/obama_02.jpg"]
    assert "chain: intact" in by_command["receipts"]
    assert (tmp_path / "people.html").exists()
    assert "default: 3 identities" in by_command["stats"]
