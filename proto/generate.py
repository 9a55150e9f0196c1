"""Regenerate the Python stubs of the wire API from proto/facebank/v1/*.proto.

    python proto/generate.py            # writes next to the .proto files
    python proto/generate.py --out DIR  # writes under DIR (used by the drift test)

Uses the grpcio-tools version pinned in pyproject's `test` extra, so the
committed stubs are byte-for-byte what this script produces.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc  # imported here: only needed by developers

    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(PROTO_ROOT.glob("facebank/v1/*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(s.relative_to(PROTO_ROOT)) for s in sources],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in out.rglob("*_pb2*.py*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTO_ROOT)
    for path in generate(parser.parse_args().out):
        print(path, file=sys.stderr)


if __name__ == "__main__":
    main()
