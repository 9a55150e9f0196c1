"""The layers, checked by import-linter (contracts in pyproject.toml), and the
one write path: no module but unit_of_work.py opens a catalog write transaction.

`facebank` is assembled from several folders (client/, index/, server/, ...;
see [tool.setuptools.package-dir]), which import-linter cannot follow, so the
package is laid out here as Python sees it, in a temporary folder, and linted there."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def package_tree(target: Path) -> Path:
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in mapping.items():
        dest = target.joinpath(*package.split("."))
        dest.mkdir(parents=True, exist_ok=True)
        for source in (ROOT / folder).glob("*.py"):
            shutil.copy(source, dest / source.name)
    return target


def test_import_contracts_hold(tmp_path):
    tree = package_tree(tmp_path / "tree")
    lint = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tree, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_importing_the_index_or_the_embedder_loads_neither_grpc_nor_the_sdk():
    code = ("import sys, facebank.index.store, facebank.embedder, facebank.index.lifecycle; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('grpc', 'grpc_health') or m in "
            "('facebank.client', 'facebank.transport', 'facebank.v1', 'facebank.server')]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_only_the_unit_of_work_opens_a_catalog_write_transaction():
    """`<anything>.catalog.write()` or `Catalog.write` is called in unit_of_work.py alone
    (key_binding.py writes the binding of a brand-new catalog before any unit of work exists)."""
    allowed = {"unit_of_work.py", "key_binding.py"}
    offenders = []
    for folder in ("index", "server", "client", "embedder"):
        for path in (ROOT / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "write":
                    owner = node.func.value
                    named = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
                    if named == "catalog" and path.name not in allowed:
                        offenders.append(f"{folder}/{path.name}:{node.lineno}")
    assert not offenders, offenders
