"""A primary's side of the search nodes: the fields each Milvus row carries beside
its vector, kept in step when an identity's name or metadata changes, and the
registry (collections and API keys) published for the nodes.

Rows get their fields when the unit of work applies a change (the catalog has
committed it and the in-memory views already show it), so a replay after a
crash writes them too. A display name or metadata change rewrites the rows of
that identity's faces right after its commit, before the call answers.
"""

from __future__ import annotations

import logging

import numpy as np

from facebank.index.milvus_registry import Registry, entries
from facebank.index.records import ENROLLED

log = logging.getLogger(__name__)


def wire(store) -> None:
    """Give the store's Milvus target its row fields and registry (FaceStore.load_indexes)."""
    target = store.segments.factory.milvus
    target.face_fields = lambda ids: face_fields(store, ids)
    target.registry = Registry(target.client, store.milvus_prefix)


def face_fields(store, face_ids: list[int]) -> dict[int, tuple[int, str, dict]]:
    owners = store.owners.lookup(np.asarray(face_ids, np.int64)).tolist()
    records = store.identity_records({iid for iid in owners if iid > 0})
    out = {}
    for face_id, iid in zip(face_ids, owners):
        rec = records.get(iid)
        if rec is not None:
            out[face_id] = (iid, rec.external_id, {"display_name": rec.display_name, "metadata": rec.metadata})
    return out


def refresh_identity(store, cid: int, iid: int) -> None:
    """Runs after the commit: a Milvus failure here must not turn a committed update into
    an error; the rows keep the old name until the identity changes again (logged)."""
    segment = store.segments.find(cid, ENROLLED)
    if segment is None or not segment.index.external:
        return
    try:
        segment.index.refresh(iid)
    except Exception:
        log.warning("could not rewrite identity %d's rows in Milvus: search nodes show its previous name and metadata", iid,
                    exc_info=True)


def publish(store) -> bool:
    """Rewrite the registry if what it should hold changed; returns whether it did."""
    target = store.segments.factory.milvus
    if target is None or getattr(target, "registry", None) is None:
        return False
    collections = []
    for rec in store.list_collections():
        segment = store.segments.find(rec.id, ENROLLED)
        if segment is None or not segment.index.external:
            continue
        collections.append({"name": rec.name, "cid": rec.id, "model_id": rec.model_id, "dim": rec.dim, "threshold": rec.threshold,
                            "ef_search": rec.index_settings.ef_search, "milvus": segment.index.name})
    keys = [{"key_id": k.key_id, "role": k.role, "collections": list(k.collections), "secret_sha256": k.secret_sha256}
            for k in store.api_keys()]
    return target.registry.publish(entries(collections, keys))
