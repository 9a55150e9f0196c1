"""Admin: stats, compaction, the receipts log and API keys."""

from __future__ import annotations

from facebank.server import convert, validate
from facebank.server.auth import ROLES, ApiKeys
from facebank.server.engine import Parts
from facebank.v1 import facebank_pb2 as pb

ROLE_TO_PB = {"search": pb.ROLE_SEARCH, "enroll": pb.ROLE_ENROLL, "admin": pb.ROLE_ADMIN}
ROLE_FROM_PB = {v: k for k, v in ROLE_TO_PB.items()}


def api_key_pb(rec) -> pb.ApiKey:
    return pb.ApiKey(key_id=rec.key_id, name=rec.name, role=ROLE_TO_PB[rec.role], collections=rec.collections, created_ms=rec.created_ms)


class AdminService:
    def __init__(self, parts: Parts) -> None:
        self.p = parts
        self.keys = ApiKeys(parts.store)

    def stats(self, req: pb.StatsRequest) -> pb.StatsResponse:
        store = self.p.store
        return pb.StatsResponse(
            collections=[convert.collection_pb(r, store.stats(r)) for r in store.list_collections()],
            model_id=self.p.faces.model_id,
            device=self.p.faces.embedder.device,
            data_bytes=sum(f.stat().st_size for f in store.data_dir.rglob("*") if f.is_file()),
            pending_retrains=self.p.maintenance.pending_retrains,
            maintenance_error=self.p.maintenance.last_error or store.uow.last_error,
            damaged_records=len(store.damage),
            index_changes_pending=store.uow.pending,
        )

    def migrate_collection(self, req: pb.MigrateCollectionRequest):
        from facebank.server.migrate import migrate_collection

        return migrate_collection(self.p, req)

    def list_cropless_images(self, req: pb.CroplessImagesRequest):
        from facebank.server.migrate import list_cropless_images

        return list_cropless_images(self.p, req)

    def fill_crops(self, req: pb.FillCropsRequest) -> pb.FillCropsResponse:
        from facebank.server.migrate import fill_crops

        return fill_crops(self.p, req)

    def compact(self, req: pb.CompactRequest) -> pb.CompactResponse:
        before, after = self.p.maintenance.compact()
        return pb.CompactResponse(bytes_before=before, bytes_after=after)

    def list_receipts(self, req: pb.ListReceiptsRequest) -> pb.ListReceiptsResponse:
        audit = self.p.store.audit
        valid, error = audit.verify()
        receipts = [convert.receipt_pb(r) for r in audit.read() if "corrupt_line" not in r]
        return pb.ListReceiptsResponse(receipts=receipts, chain_valid=valid, chain_error=error)

    def receipt_key(self, req: pb.ReceiptKeyRequest) -> pb.ReceiptKeyResponse:
        signer = self.p.store.audit.signer
        return pb.ReceiptKeyResponse(public_key_pem=signer.public_pem(), key_id=signer.key_id)

    def check_catalog(self, req: pb.CheckCatalogRequest) -> pb.CheckCatalogResponse:
        from facebank.index.catalog_tables import describe_key
        from facebank.index.integrity import check_catalog

        checked, damaged, moved = check_catalog(self.p.store, quarantine=req.quarantine)
        with self.p.store.read() as t:
            aside = t.quarantined()
        return pb.CheckCatalogResponse(
            rows_checked=checked, quarantined=moved,
            damaged=[pb.DamagedRecord(table=d.table, key=d.described, problem=d.problem) for d in damaged],
            in_quarantine=[pb.DamagedRecord(table=table, key=describe_key(table, key), problem="quarantined") for table, key in aside],
        )

    def create_api_key(self, req: pb.CreateApiKeyRequest) -> pb.CreateApiKeyResponse:
        role = ROLE_FROM_PB.get(req.role)
        if role is None:
            from facebank.errors import InvalidArgument, Reason

            raise InvalidArgument(f"choose a role: {', '.join(ROLES)}", reason=Reason.BAD_OPTION)
        name = validate.display_name(req.name, "name")
        collections = [validate.collection_name(c) for c in req.collections]
        rec, secret = self.keys.create(name, role, collections)
        return pb.CreateApiKeyResponse(key=api_key_pb(rec), secret=secret)

    def list_api_keys(self, req: pb.ListApiKeysRequest) -> pb.ListApiKeysResponse:
        return pb.ListApiKeysResponse(keys=[api_key_pb(r) for r in self.keys.list()])

    def revoke_api_key(self, req: pb.RevokeApiKeyRequest) -> pb.RevokeApiKeyResponse:
        self.keys.revoke(req.key_id)
        return pb.RevokeApiKeyResponse()
