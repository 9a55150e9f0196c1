"""API keys and roles.

A key is `fbk_<key id>_<secret>`; only the SHA-256 of the whole key is stored
(keys are 256-bit random, so a plain hash is enough; no password stretching
needed). Roles are ordered: search < enroll < admin. A key may be scoped to
some collections. Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from facebank.errors import InvalidArgument, PermissionDenied, Reason, Unauthenticated
from facebank.index.records import ApiKeyRecord
from facebank.index.sealed_faces import now_ms
from facebank.index.store import FaceStore

ROLES = ("search", "enroll", "admin")
_RANK = {name: i for i, name in enumerate(ROLES)}

# The least role each RPC needs; anything not listed needs admin.
RPC_ROLES: dict[str, str] = {
    "Collections/DescribeCollection": "search",
    "Collections/ListCollections": "search",
    "Search/SearchByImage": "search",
    "Search/SearchByEmbedding": "search",
    "Search/Verify": "search",
    "Search/DetectFaces": "search",
    "Identities/CreateIdentity": "enroll",
    "Identities/GetIdentity": "search",
    "Identities/ListIdentities": "search",
    "Identities/UpdateIdentity": "enroll",
    "Identities/DeleteFace": "enroll",
    "Identities/GetFaceCrop": "enroll",
    "Enrollment/Enroll": "enroll",
    "Enrollment/BulkEnroll": "enroll",
    "Clusters/Ingest": "enroll",
    "Clusters/RunClustering": "enroll",
    "Clusters/ListClusters": "search",
    "Clusters/GetCluster": "search",
    "Clusters/MergeClusters": "enroll",
    "Clusters/SplitCluster": "enroll",
    "Clusters/MoveFaces": "enroll",
    "Clusters/NameCluster": "enroll",
    "Admin/Stats": "search",
    "Admin/ReceiptKey": "search",
}


def required_role(service: str, method: str, request=None) -> str:
    """The least role for this call: face crops (`with_crops`) are for the enroll role and up."""
    role = RPC_ROLES.get(f"{service}/{method}", "admin")
    if getattr(request, "with_crops", False) and _RANK[role] < _RANK["enroll"]:
        return "enroll"
    return role


class ApiKeys:
    def __init__(self, store: FaceStore) -> None:
        self.store = store
        # Asked on every call, so kept in memory; any write resets it, and a read
        # that began before a write is not kept.
        self._any: bool | None = None
        self._generation = 0
        store.uow.after_commit.append(self._changed)

    def _changed(self) -> None:
        self._generation += 1
        self._any = None

    def any(self) -> bool:
        known = self._any
        if known is not None:
            return known
        generation = self._generation
        found = self.store.has_api_keys()
        if generation == self._generation:
            self._any = found
        return found

    def create(self, name: str, role: str, collections: list[str]) -> tuple[ApiKeyRecord, str]:
        if role not in ROLES:
            raise InvalidArgument(f"role {role!r} is unknown; use one of {', '.join(ROLES)}", reason=Reason.BAD_OPTION)
        key_id = secrets.token_hex(6)
        secret = f"fbk_{key_id}_{secrets.token_urlsafe(32)}"
        rec = ApiKeyRecord(key_id, name, role, sorted(set(collections)), _digest(secret), now_ms())
        self.store.put_api_key(rec)
        return rec, secret

    def list(self) -> list[ApiKeyRecord]:
        return self.store.api_keys()

    def revoke(self, key_id: str) -> None:
        self.store.revoke_api_key(key_id)

    def authenticate(self, secret: str | None) -> ApiKeyRecord:
        return check_secret(secret, self.store.api_key)

    @staticmethod
    def authorize(rec: ApiKeyRecord, role: str, collection: str | None) -> None:
        if _RANK[rec.role] < _RANK[role]:
            raise PermissionDenied(f"API key {rec.key_id!r} has role {rec.role!r}; this call needs {role!r}")
        if not rec.collections:
            return
        if collection is None:
            raise PermissionDenied(f"API key {rec.key_id!r} is scoped to collections {rec.collections}; this call spans every collection")
        if (collection or "default") not in rec.collections:
            raise PermissionDenied(f"API key {rec.key_id!r} may not use collection {collection or 'default'!r}")


NOT_VALID = "the API key is not valid (revoked or mistyped); ask an admin for a new one"


def check_secret(secret: str | None, lookup, not_valid: str = NOT_VALID) -> ApiKeyRecord:
    """The key record a secret (`fbk_<key id>_<random>`) belongs to, found by `lookup(key id)`
    (the catalog's, or on a search node the published one), checked against its SHA-256.
    `not_valid`: the refusal's message (a search node's says a new key may not have reached it)."""
    if not secret:
        raise Unauthenticated("this server requires an API key: set FACEBANK_API_KEY (or send 'authorization: Bearer <key>')")
    parts = secret.split("_")
    rec = lookup(parts[1]) if len(parts) >= 3 and parts[0] == "fbk" else None
    if rec is None or not hmac.compare_digest(rec.secret_sha256, _digest(secret)):
        raise Unauthenticated(not_valid)
    return rec


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
