"""The append-only audit log of forget receipts, hash-chained.

Each receipt is one JSON line holding `prev_hash` (the previous receipt's
hash) and `hash`, the SHA-256 of the receipt's canonical JSON without `hash`.
Editing, removing or reordering any line breaks the chain from there on,
and `verify()` says where. Receipts hold no biometric data and no plaintext
identity (the subject is a keyed hash).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

GENESIS = "0" * 64


def receipt_hash(receipt: dict) -> str:
    body = {k: v for k, v in receipt.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class AuditLog:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "receipts.jsonl"
        self._lock = threading.Lock()
        self._drop_torn_tail()

    def _drop_torn_tail(self) -> None:
        """A crash mid-append leaves a partial last line: drop it. The forget it
        belonged to still has its intent record, and recovery writes it again."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
                os.fsync(f.fileno())

    def append(self, receipt: dict) -> dict:
        """Chain, write and fsync the receipt; returns it with sequence and hashes."""
        with self._lock:
            existing = self.read()
            last = existing[-1] if existing else None
            chained = dict(receipt)
            chained["sequence"] = (last["sequence"] + 1) if last else 1
            chained["prev_hash"] = last["hash"] if last else GENESIS
            chained["hash"] = receipt_hash(chained)
            line = json.dumps(chained, sort_keys=True, separators=(",", ":")) + "\n"
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            return chained

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        receipts = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    receipts.append(json.loads(line))
                except ValueError:
                    receipts.append({"corrupt_line": line[:200]})
        return receipts

    def verify(self) -> tuple[bool, str]:
        """(True, "") if the chain is intact, else (False, where it breaks)."""
        previous = GENESIS
        for number, receipt in enumerate(self.read(), start=1):
            if "corrupt_line" in receipt:
                return False, f"line {number} is not valid JSON"
            if receipt.get("prev_hash") != previous:
                return False, f"receipt {number} does not follow receipt {number - 1} (removed or reordered?)"
            if receipt_hash(receipt) != receipt.get("hash"):
                return False, f"receipt {number} was altered after it was written"
            previous = receipt["hash"]
        return True, ""
