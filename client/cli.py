"""The `facebank` command.

Every command exits 0 on success and otherwise prints one line saying what
went wrong and what to do, with no traceback for a user's mistake.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from facebank.client import Client, connect
from facebank.errors import FacebankError
from facebank.transport import SERVER_ENV


class Cli(click.Group):
    """Turns our errors into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FacebankError as err:
            click.echo(f"error: {err.message}", err=True)
            sys.exit(1)
        except OSError as err:
            where = f" {err.filename}" if getattr(err, "filename", None) else ""
            click.echo(f"error:{where}: {err.strerror or err}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


def client_from(ctx: click.Context) -> Client:
    return connect(ctx.obj.get("server"))


def emit_json(value) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


server_option = click.option("--server", envvar=SERVER_ENV, help="Server address HOST:PORT (default 127.0.0.1:50051).")
collection_option = click.option("--collection", "-c", default="default", show_default=True, help="Collection name.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@server_option
@click.version_option(package_name="facebank")
@click.pass_context
def main(ctx: click.Context, server: str | None) -> None:
    """facebank: a self-hosted face identification database."""
    ctx.ensure_object(dict)
    ctx.obj["server"] = server


@main.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default="./facebank-data", show_default=True, envvar="FACEBANK_DATA", help="Data directory.")
@click.option("--listen", default="127.0.0.1:50051", show_default=True, envvar="FACEBANK_LISTEN", help="Address to listen on (gRPC).")
@click.option("--http", "http", default="127.0.0.1:8000", show_default=True, envvar="FACEBANK_HTTP",
              help="Address of the HTTP/JSON API and the CompreFace/DeepStack-compatible routes; 'off' for none.")
@click.option("--keys-dir", type=click.Path(path_type=Path), envvar="FACEBANK_KEYS_DIR", help="Where the master key and data keys live (default DATA/keys).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True, envvar="FACEBANK_DEVICE", help="Where models and search run.")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "torch"]), default="auto", show_default=True, envvar="FACEBANK_BACKEND", help="How the models run.")
@click.option("--model", type=click.Choice(["default", "sface"]), default="default", show_default=True, envvar="FACEBANK_MODEL",
              help="The shipped model pair: default (InsightFace weights, non-commercial use only) or sface (OpenCV Zoo, commercial use; "
                   "pip install 'facebank[commercial]').")
@click.option("--model-spec", type=click.Path(exists=True, path_type=Path), envvar="FACEBANK_MODEL_SPEC", help="JSON spec of another ArcFace-style ONNX pair.")
@click.option("--vectors", default="faiss", show_default=True, envvar="FACEBANK_VECTORS",
              help="Where the vectors live: faiss (in this process), milvus://HOST:PORT (a Milvus server or cluster) or milvus-lite:PATH.db; "
                   "pip install 'facebank[milvus]'. A data directory keeps the choice it started with.")
@click.option("--role", type=click.Choice(["primary", "search"]), default="primary", show_default=True, envvar="FACEBANK_ROLE",
              help="search: a search node, no catalog: answers searches, verifications and detections from the primary's Milvus "
                   "(--vectors milvus://HOST:PORT), with the keys the primary publishes; any number beside one primary.")
@click.option("--primary-id", default="", envvar="FACEBANK_PRIMARY_ID", help="Search nodes: which primary, when several publish on one Milvus.")
@click.option("--threads", type=int, default=0, help="Inference threads (0 = all cores).")
@click.option("--max-concurrent-rpcs", type=int, default=64, show_default=True, help="Beyond this, calls get RESOURCE_EXHAUSTED.")
@click.option("--micro-batch-ms", type=float, default=0.0, help="Wait this long to batch faces across requests (useful on a GPU).")
@click.option("--tls-cert", type=click.Path(exists=True, path_type=Path), envvar="FACEBANK_TLS_CERT")
@click.option("--tls-key", type=click.Path(exists=True, path_type=Path), envvar="FACEBANK_TLS_KEY")
@click.option("--tls-client-ca", type=click.Path(exists=True, path_type=Path), envvar="FACEBANK_TLS_CLIENT_CA", help="Require client certificates signed by this CA (mutual TLS).")
@click.option("--crops/--no-crops", "keep_crops", default=True, show_default=True, envvar="FACEBANK_KEEP_CROPS",
              help="New collections (the default one included) keep each face's aligned crop, sealed; --no-crops: templates only.")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True, envvar="FACEBANK_LOG_FORMAT",
              help="json: one JSON object per line (requests: method, collection, status, ms).")
def serve(data_dir, listen, http, keys_dir, device, backend, model, model_spec, vectors, role, primary_id, threads, max_concurrent_rpcs, micro_batch_ms, tls_cert, tls_key, tls_client_ca,
          keep_crops, log_level, log_format) -> None:
    """Start the server (embedded LMDB + FAISS in a local data directory)."""

    from facebank.server.runtime import configure_process

    configure_process()  # before anything loads FAISS
    from facebank.server.app import serve_forever
    from facebank.server.config import ServerConfig

    from facebank.server.logs import configure

    configure(log_level, log_format)
    config = ServerConfig(
        data_dir=data_dir, listen=listen, http=http, keys_dir=keys_dir, device=device, backend=backend, model=model, model_spec=model_spec, vectors=vectors, threads=threads,
        role=role, primary_id=primary_id, max_concurrent_rpcs=max_concurrent_rpcs, micro_batch_wait_ms=micro_batch_ms,
        tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=tls_client_ca, keep_crops=keep_crops,
    )
    def ready(running) -> None:
        http_line = (f"; HTTP on http://{running.http.address} (docs: /docs, review console: /console)" if running.http
                     else "; HTTP API and review console off")
        node = " (search node)" if role == "search" else ""
        click.echo(f"facebank listening on {running.address}{node}{http_line}")
        sys.stdout.flush()

    serve_forever(config, on_ready=ready)


@main.command()
@json_option
@click.pass_context
def stats(ctx, as_json: bool) -> None:
    """Counts per collection: identities, faces in the catalog, vectors indexed."""
    with client_from(ctx) as fb:
        s = fb.stats()
    collections = [
        {
            "name": c.name, "identities": c.stats.identities, "faces": c.stats.faces, "indexed": c.stats.indexed,
            "unassigned": c.stats.unassigned, "clusters": c.stats.clusters, "index": _kind_name(c.stats.active_index),
            "threshold": round(c.threshold, 4), "retrain_pending": c.stats.retrain_pending,
            "catalog_seq": c.stats.catalog_seq, "snapshot_seq": c.stats.snapshot_seq,
            **({"nprobe": c.stats.nprobe, "calibrated_recall": round(c.stats.calibrated_recall, 4)} if c.stats.nprobe else {}),
        }
        for c in s.collections
    ]
    if as_json:
        emit_json({"collections": collections, "model_id": s.model_id, "device": s.device, "data_bytes": s.data_bytes,
                   "pending_retrains": s.pending_retrains, "index_changes_pending": s.index_changes_pending,
                   "damaged_records": s.damaged_records, "maintenance_error": s.maintenance_error})
        return
    click.echo(f"model {s.model_id} on {s.device}; data {s.data_bytes / 2**20:.1f} MiB; pending retrains: {s.pending_retrains}")
    if s.damaged_records:
        click.echo(f"warning: {s.damaged_records} damaged catalog record(s) are left out of every answer; run `facebank check`", err=True)
    if s.maintenance_error:
        click.echo(f"warning: background upkeep failed: {s.maintenance_error} (see the server log)", err=True)
    for c in collections:
        click.echo(
            f"{c['name']}: {c['identities']} identities, {c['faces']} faces, {c['indexed']} indexed ({c['index']}), "
            f"{c['unassigned']} unassigned, {c['clusters']} clusters" + (", retrain pending" if c["retrain_pending"] else "")
        )


def _kind_name(kind: int) -> str:
    from facebank.v1 import facebank_pb2 as pb

    return pb.IndexKind.Name(kind).removeprefix("INDEX_KIND_").lower()


@main.command()
@click.pass_context
def compact(ctx) -> None:
    """Rewrite the catalog without free pages, after cleaning every index and snapshot."""
    with client_from(ctx) as fb:
        r = fb.compact()
    click.echo(f"compacted: {r.bytes_before / 2**20:.1f} MiB -> {r.bytes_after / 2**20:.1f} MiB")


def receipt_dict(r) -> dict:
    v = r.verification
    return {
        "sequence": r.sequence, "kind": r.kind, "time_ms": r.time_ms, "collection": r.collection, "subject_hash": r.subject_hash,
        "removed": dict(sorted(r.removed.items())), "index_removal_pending": r.index_removal_pending,
        "generation_before": r.generation_before, "generation_after": r.generation_after,
        "derived_clean": r.derived_clean, "snapshot_rewritten": r.snapshot_rewritten,
        "verification": {"method": v.method, "probes": v.probes, "face_ids": v.face_ids, "returned": v.returned, "in_index": v.in_index,
                         "max_score": round(v.max_score, 6), "threshold": round(v.threshold, 6), "passed": v.passed},
        "note": r.note, "prev_hash": r.prev_hash, "hash": r.hash, "key_id": r.key_id, "signature": r.signature,
    }


@main.command()
@json_option
@click.option("--public-key", "public_key", is_flag=True, help="Print the server's receipt public key (PEM) and exit.")
@click.option("--verify", "verify_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Check a copy of receipts.jsonl offline (no server) against --key.")
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="The receipt public key (PEM) for --verify.")
@click.pass_context
def receipts(ctx, as_json: bool, public_key: bool, verify_file: Path | None, key_file: Path | None) -> None:
    """List forget receipts and check their chain and signatures."""
    if verify_file is not None:
        _verify_offline(verify_file, key_file)
        return
    with client_from(ctx) as fb:
        if public_key:
            click.echo(fb.receipt_key().public_key_pem, nl=False)
            return
        r = fb.receipts()
    if as_json:
        emit_json({"chain_valid": r.chain_valid, "chain_error": r.chain_error, "receipts": [receipt_dict(x) for x in r.receipts]})
    else:
        from facebank.cli_faces import verification_line

        for x in r.receipts:
            click.echo(
                f"#{x.sequence} {x.kind or 'forget'} {x.collection} subject {x.subject_hash[:16]}: removed {dict(sorted(x.removed.items()))}; "
                f"derived clean: {x.derived_clean}; verification {verification_line(x.verification)}{'; ' + x.note if x.note else ''}"
            )
        click.echo(f"chain: {'intact and signed' if r.chain_valid else 'BROKEN: ' + r.chain_error} ({len(r.receipts)} receipts)")
    if not r.chain_valid:
        sys.exit(1)


def _verify_offline(path: Path, key_file: Path | None) -> None:
    from facebank.errors import InvalidArgument
    from facebank.index.audit import load_public_key, parse_receipts, verify_receipts

    if key_file is None:
        raise InvalidArgument("--verify needs --key PUBLIC_KEY.pem (get it with `facebank receipts --public-key`)")
    receipts_ = parse_receipts(path.read_text(encoding="utf-8"))
    ok, error = verify_receipts(receipts_, load_public_key(key_file.read_bytes()))
    if not ok:
        click.echo(f"error: {path}: {error}", err=True)
        sys.exit(1)
    click.echo(f"{path}: {len(receipts_)} receipts, chain intact, every signature valid")


@main.command()
@click.option("--quarantine", is_flag=True, help="Move damaged records aside so they are never read again.")
@json_option
@click.pass_context
def check(ctx, quarantine: bool, as_json: bool) -> None:
    """Check every catalog record and sealed embedding; list (and quarantine) damaged ones."""
    with client_from(ctx) as fb:
        r = fb.check_catalog(quarantine=quarantine)
    damaged = [{"table": d.table, "key": d.key, "problem": d.problem} for d in r.damaged]
    if as_json:
        emit_json({"rows_checked": r.rows_checked, "damaged": damaged, "quarantined": r.quarantined,
                   "in_quarantine": [{"table": d.table, "key": d.key} for d in r.in_quarantine]})
    else:
        for d in damaged:
            click.echo(f"damaged: {d['table']}/{d['key']}: {d['problem']}")
        click.echo(f"{r.rows_checked} records checked; {len(damaged)} damaged; {r.quarantined} quarantined now; "
                   f"{len(r.in_quarantine)} in quarantine")
    if damaged and not quarantine:
        sys.exit(1)


from facebank import cli_faces, cli_admin, cli_migrate, cli_photos  # noqa: E402  (register their commands)

cli_faces.register(main)
cli_admin.register(main)
cli_migrate.register(main)
cli_photos.register(main)
