"""A data directory written by facebank 0.1 (bare rows, a slot file without its
header, unsigned receipts) opens with this version: rows are authenticated,
the catalog bound to its keys, and nothing is lost."""

from __future__ import annotations

import json

import lmdb
import numpy as np

from conftest import open_store
from facebank.index import identities
from facebank.index.catalog_tables import TABLES, TAG
from facebank.index.face_record_codec import decode_face
from facebank.index.forget import forget_identity
from facebank.index.keyring import SLOT_SIZE
from facebank.index.records import IndexSettings, dumps
from facebank.index.sealed_faces import NewFace

DIM = 16


def face(seed: int) -> NewFace:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return NewFace([0, 0, 9, 9], [[1, 1]] * 5, 0.9, {"passed": True}, v / np.linalg.norm(v), f"{seed:064x}", f"p{seed}.jpg", "m")


def downgrade(data_dir) -> None:
    """Rewrite a current data directory the way 0.1 stored it."""
    env = lmdb.open(str(data_dir / "catalog"), max_dbs=len(TABLES) + 2)
    with env.begin(write=True) as txn:
        for table in TABLES:
            db = env.open_db(table.encode(), txn=txn)
            rows = list(txn.cursor(db=db).iternext())
            for key, stored in rows:
                value = stored[:-TAG]
                if table == "embeddings":
                    value = value[16:]  # 0.1 kept only the sealed vector
                if table == "faces":
                    value = dumps(decode_face(value))  # 0.1 kept face records as JSON
                txn.put(key, value, db=db)
        meta = env.open_db(b"meta", txn=txn)
        txn.delete(b"binding", db=meta)
        index = env.open_db(b"metadata_index", txn=txn)  # 0.1 keyed metadata by its raw text
        txn.drop(index, delete=False)
        for _, value in txn.cursor(db=env.open_db(b"identities", txn=txn)).iternext():
            rec = json.loads(value)
            for k, v in rec["metadata"].items():
                key = rec["collection_id"].to_bytes(4, "big") + k.encode() + b"\0" + v.encode() + b"\0" + rec["iid"].to_bytes(8, "big")
                txn.put(key, b"", db=index)
    env.close()
    slots = data_dir / "keys" / "keyslots.bin"
    slots.write_bytes(slots.read_bytes()[SLOT_SIZE:])
    (data_dir / "keys" / "receipts.key").unlink()
    log = data_dir / "audit" / "receipts.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    from facebank.index.audit import receipt_hash

    previous = "0" * 64
    for row in rows:  # 0.1 receipts: hash-chained, unsigned
        for field in ("signature", "key_id"):
            row.pop(field, None)
        row["prev_hash"] = previous
        row["hash"] = previous = receipt_hash(row)
    log.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def test_a_01_data_directory_is_upgraded_in_place(tmp_path):
    data = tmp_path / "d"
    store = open_store(data)
    store.create_collection("c", "m", DIM, 0.4, IndexSettings(kind="flat"))
    for i in range(6):
        identities.enroll(store, "c", f"person-{i}", f"Person {i}", {"team": "x" * 300}, [face(i), face(100 + i)])
    forget_identity(store, store.maintenance, "c", "person-5")
    store.close()
    downgrade(data)

    store = open_store(data)
    try:
        rec, faces = identities.identity(store, "c", "person-3")
        assert rec.display_name == "Person 3" and len(faces) == 2 and rec.metadata["team"] == "x" * 300
        _, vectors = identities.identity_vectors(store, "c", "person-3")
        assert np.allclose(np.sort(vectors @ face(3).embedding)[-1], 1.0, atol=1e-5)
        assert store.search("c", face(103).embedding[None], 1)[0][0].identity.external_id == "person-3"
        valid, error = store.audit.verify()
        assert valid, error  # unsigned receipts from before may precede the signed ones
        forget_identity(store, store.maintenance, "c", "person-4")
        assert store.audit.verify() == (True, "") and "signature" in store.audit.read()[-1]
    finally:
        store.close()
    store = open_store(data)  # and opens again as a current catalog
    assert identities.identity(store, "c", "person-0")[0].display_name == "Person 0"
    store.close()
