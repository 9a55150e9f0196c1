"""What a primary publishes in Milvus for its search nodes, and how nodes read it.

A search node (`facebank serve --role search`) has no catalog: it learns the
collections (their Milvus collection, model, size, threshold) and the API keys
(id, role, scope, SHA-256 of the secret: never a secret) from one small Milvus
collection per primary, `<prefix>_registry`, that the primary rewrites whenever
they change (its maintenance worker wakes at every commit). A revoked key is
deleted from it; nodes re-read it every REFRESH_S, at Strong consistency.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from facebank.errors import FailedPrecondition, Reason

log = logging.getLogger(__name__)

SUFFIX = "_registry"
REFRESH_S = 1.0
MISS_REFRESH_S = 0.2  # a name not in the copy re-reads the registry, at most this often
NAME_MAX = 512


def registry_name(prefix: str) -> str:
    return prefix + SUFFIX


def find_prefix(client, spec: str, wanted: str = "") -> str:
    """The prefix of the one primary publishing on this Milvus (or `wanted`'s); one clear line otherwise."""
    found = sorted(name.removesuffix(SUFFIX) for name in client.list_collections() if name.startswith("fb") and name.endswith(SUFFIX))
    if wanted:
        if wanted not in found:
            raise FailedPrecondition(f"no facebank primary {wanted!r} publishes on {spec} (found: {', '.join(found) or 'none'})",
                                     reason=Reason.BAD_OPTION)
        return wanted
    if not found:
        raise FailedPrecondition(f"no facebank primary publishes on {spec}: start the primary with --vectors {spec} first",
                                 reason=Reason.BAD_OPTION)
    if len(found) > 1:
        raise FailedPrecondition(f"several facebank primaries publish on {spec} ({', '.join(found)}); choose one with --primary-id",
                                 reason=Reason.BAD_OPTION)
    return found[0]


class Registry:
    def __init__(self, client, prefix: str) -> None:
        self.client = client
        self.name = registry_name(prefix)
        self._published: dict[str, dict] | None = None

    def ensure(self) -> None:
        if self.client.has_collection(self.name):
            return
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("name", DataType.VARCHAR, is_primary=True, max_length=NAME_MAX)
        schema.add_field("value", DataType.JSON)
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field in every collection
        params = self.client.prepare_index_params()
        params.add_index(field_name="unused", index_type="FLAT", metric_type="IP")
        self.client.create_collection(self.name, schema=schema, index_params=params, consistency_level="Strong")

    def publish(self, entries: dict[str, dict]) -> bool:
        """Make the registry hold exactly these entries; returns whether anything changed."""
        if entries == self._published:
            return False
        self.ensure()
        current = self.read() if self._published is None else self._published
        gone = [name for name in current if name not in entries]
        changed = [{"name": k, "value": v, "unused": [0.0, 0.0]} for k, v in entries.items() if current.get(k) != v]
        if changed:
            self.client.upsert(self.name, changed)
        if gone:
            self.client.delete(self.name, ids=gone)
        self._published = json.loads(json.dumps(entries))
        return bool(changed or gone)

    def read(self) -> dict[str, dict]:
        rows = self.client.query(self.name, filter='name != ""', output_fields=["name", "value"], consistency_level="Strong")
        return {r["name"]: r["value"] for r in rows}


def entries(collections: list[dict], keys: list[dict]) -> dict[str, dict]:
    """The registry's content: the primary's collections by name, its API keys by id
    (the registry's own name says whose they are)."""
    out = {f"collection:{c['name']}": c for c in collections}
    out.update({f"key:{k['key_id']}": k for k in keys})
    return out


class RegistryView:
    """A node's copy of the registry, re-read every REFRESH_S on its own thread."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.entries = registry.read()
        self.read_at = time.monotonic()
        self.error = ""
        self._miss = threading.Lock()

    def refresh(self) -> None:
        try:
            self.entries = self.registry.read()
            self.read_at = time.monotonic()
            self.error = ""
        except Exception as err:  # keep the last copy; health and logs say it is stale
            self.error = f"{type(err).__name__}: {err}"
            log.warning("could not re-read the registry %s: %s", self.registry.name, self.error)

    def collection(self, name: str) -> dict | None:
        """A collection the primary created since the last read is found at once (not after
        the next periodic read): a miss re-reads the registry, at most every MISS_REFRESH_S."""
        entry = self.entries.get(f"collection:{name}")
        if entry is None:
            with self._miss:  # misses arriving together read it once
                if time.monotonic() - self.read_at >= MISS_REFRESH_S:
                    self.refresh()
            entry = self.entries.get(f"collection:{name}")
        return entry

    def collections(self) -> list[dict]:
        return [v for k, v in self.entries.items() if k.startswith("collection:")]

    def key(self, key_id: str) -> dict | None:
        return self.entries.get(f"key:{key_id}")

    def any_key(self) -> bool:
        return any(k.startswith("key:") for k in self.entries)
