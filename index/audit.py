"""The append-only audit log of forget receipts: hash-chained and signed.

Each receipt is one JSON line holding `prev_hash` (the previous receipt's
hash), `hash` (SHA-256 of its canonical JSON without `hash` and `signature`)
and `signature`, an Ed25519 signature of that hash by the receipt key, which
lives in the keys directory beside the master key (`receipts.key`), not
beside the log. Editing, removing or reordering a line breaks the chain; a
rewritten log whose hashes were recomputed fails the signatures. Anyone holding
the public key (`facebank receipts --public-key`) can check a copy of the log
alone (`verify_receipts`). Receipts hold no biometric data and no plaintext
identity (the subject is a keyed hash).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import stat
import threading
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from facebank.errors import FailedPrecondition, disk_full
from facebank.index.durable import private_dir, write_private_file

GENESIS = "0" * 64
SIGNING_KEY_FILE = "receipts.key"


def receipt_hash(receipt: dict) -> str:
    body = {k: v for k, v in receipt.items() if k not in ("hash", "signature")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class ReceiptSigner:
    """The Ed25519 key receipts are signed with."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    @classmethod
    def load_or_create(cls, keys_dir: Path) -> "ReceiptSigner":
        path = keys_dir / SIGNING_KEY_FILE
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                raise FailedPrecondition(f"{path} is readable by other users (mode {mode:04o}); run: chmod 600 {path}")
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise FailedPrecondition(f"{path} does not hold an Ed25519 private key")
            return cls(private)
        private = Ed25519PrivateKey.generate()
        private_dir(keys_dir)
        write_private_file(path, private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return cls(private)

    def sign(self, digest_hex: str) -> str:
        return base64.b64encode(self._private.sign(bytes.fromhex(digest_hex))).decode()

    def public_pem(self) -> str:
        return self.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class AuditLog:
    def __init__(self, directory: Path, signer: ReceiptSigner) -> None:
        private_dir(directory)
        self.path = directory / "receipts.jsonl"
        self.signer = signer
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
        """Chain, sign, write and fsync the receipt; returns it as written."""
        with self._lock:
            existing = self.read()
            last = existing[-1] if existing else None
            chained = dict(receipt)
            chained["sequence"] = (last.get("sequence", 0) + 1) if last else 1
            chained["prev_hash"] = last.get("hash", "") if last else GENESIS
            chained["key_id"] = self.signer.key_id
            chained["hash"] = receipt_hash(chained)
            chained["signature"] = self.signer.sign(chained["hash"])
            line = json.dumps(chained, sort_keys=True, separators=(",", ":")) + "\n"
            size = self.path.stat().st_size if self.path.exists() else 0
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            except OSError as err:
                os.ftruncate(fd, size)  # no torn line; the forget's intent writes this receipt again
                if err.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise disk_full(self.path.parent, err.strerror) from None
                raise
            finally:
                os.close(fd)
            return chained

    def read(self) -> list[dict]:
        return parse_receipts(self.path.read_text(encoding="utf-8")) if self.path.exists() else []

    def verify(self) -> tuple[bool, str]:
        """(True, "") if the chain is intact and signed by this log's key, else (False, where it breaks)."""
        return verify_receipts(self.read(), self.signer.public)


def parse_receipts(text: str) -> list[dict]:
    receipts = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            receipts.append(json.loads(line))
        except ValueError:
            receipts.append({"corrupt_line": line[:200]})
    return receipts


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise FailedPrecondition("the public key is not an Ed25519 key (export it with `facebank receipts --public-key`)")
    return key


def verify_receipts(receipts: list[dict], public: Ed25519PublicKey) -> tuple[bool, str]:
    """Check a log with nothing but the public key: every line parses, follows the one
    before it, hashes to its `hash`, and carries a valid signature by that key.
    Receipts written before receipts were signed may only precede the signed ones."""
    previous, signed_seen, kid = GENESIS, False, key_id(public)
    for number, receipt in enumerate(receipts, start=1):
        if "corrupt_line" in receipt:
            return False, f"line {number} is not valid JSON"
        if receipt.get("prev_hash") != previous:
            return False, f"receipt {number} does not follow receipt {number - 1} (removed or reordered?)"
        if receipt_hash(receipt) != receipt.get("hash"):
            return False, f"receipt {number} was altered after it was written"
        signature = receipt.get("signature")
        if signature is None:
            if signed_seen:
                return False, f"receipt {number} is not signed, after signed ones"
        else:
            signed_seen = True
            if receipt.get("key_id") != kid:
                return False, f"receipt {number} was signed by another key ({receipt.get('key_id')}), not {kid}"
            try:
                public.verify(base64.b64decode(signature), bytes.fromhex(receipt["hash"]))
            except (InvalidSignature, ValueError):
                return False, f"receipt {number} has an invalid signature (rewritten without the receipt key?)"
        previous = receipt["hash"]
    return True, ""
