"""`facebank check`: every catalog row and every sealed embedding, checked.

A row is damaged when its integrity tag does not match its table, key and
value (a flipped bit, a truncated value, a row moved under another key); a
sealed embedding is damaged when its data key cannot unwrap it or its
authentication fails. Damaged rows are listed by table and key; with
`quarantine` they are moved aside into the `quarantine` table, as they were,
so they are never read again (search, listings and rebuilds already skip
them, and report them, without this).
"""

from __future__ import annotations

from dataclasses import dataclass

from facebank.errors import DataCorruption
from facebank.index.catalog_tables import TABLES, describe_key, read_u64
from facebank.index.embedding_codec import unpack
from facebank.index.face_record_codec import decode_face
from facebank.index.keyring import KeyShredded, crop_aad, embedding_aad
from facebank.index.sealed_faces import owner_tag
from facebank.index.store import FaceStore


@dataclass
class Damage:
    table: str
    key: bytes
    problem: str

    @property
    def described(self) -> str:
        return describe_key(self.table, self.key)


def check_catalog(store: FaceStore, *, quarantine: bool = False) -> tuple[int, list[Damage], int]:
    """(rows checked, damaged rows, rows quarantined now)."""
    damaged: list[Damage] = []
    checked = 0
    with store.read() as t:
        for table in TABLES:
            if table == "quarantine":
                continue
            for key, stored in t.raw_rows(table):
                checked += 1
                value = t.mac.check(table, key, stored)
                if value is None:
                    damaged.append(Damage(table, key, "failed its integrity tag"))
                elif table in ("embeddings", "staged_embeddings", "crops"):
                    problem = _sealed_problem(store, table, read_u64(key), value)
                    if problem:
                        damaged.append(Damage(table, key, problem))
                elif table == "faces":
                    try:
                        decode_face(value)
                    except ValueError as err:
                        damaged.append(Damage(table, key, str(err)))
    moved = 0
    if quarantine and damaged:
        with store.write() as w:
            for d in damaged:
                stored = w.txn.get(d.key, db=w.db[d.table])
                if stored is not None:
                    w.quarantine(d.table, d.key, stored)
                    moved += 1
        store.damage.forget([(d.table, d.key) for d in damaged])
    return checked, damaged, moved


def _sealed_problem(store: FaceStore, table: str, face_id: int, value: bytes) -> str:
    iid, slot, sealed = read_u64(value), read_u64(value, 8), value[16:]
    try:
        key = store.keyring.open(slot, owner_tag(iid, face_id))
    except KeyShredded:
        return ""  # a forget in progress: its erase commits next (or at the next start)
    except DataCorruption:
        return f"its data key (slot {slot}) failed its check"
    try:
        plain = key.open(sealed, crop_aad(face_id) if table == "crops" else embedding_aad(face_id))
    except DataCorruption:
        return f"sealed {'face crop' if table == 'crops' else 'embedding'} failed its authentication"
    if table != "crops":
        try:
            unpack(plain)
        except DataCorruption as err:
            return str(err)
    return ""
