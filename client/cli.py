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
@click.option("--listen", default="127.0.0.1:50051", show_default=True, envvar="FACEBANK_LISTEN", help="Address to listen on.")
@click.option("--keys-dir", type=click.Path(path_type=Path), envvar="FACEBANK_KEYS_DIR", help="Where the master key and data keys live (default DATA/keys).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True, envvar="FACEBANK_DEVICE", help="Where models and search run.")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "torch"]), default="auto", show_default=True, envvar="FACEBANK_BACKEND", help="How the models run.")
@click.option("--model-spec", type=click.Path(exists=True, path_type=Path), envvar="FACEBANK_MODEL_SPEC", help="JSON spec of another ArcFace-style ONNX pair.")
@click.option("--threads", type=int, default=0, help="Inference threads (0 = all cores).")
@click.option("--max-concurrent-rpcs", type=int, default=64, show_default=True, help="Beyond this, calls get RESOURCE_EXHAUSTED.")
@click.option("--micro-batch-ms", type=float, default=0.0, help="Wait this long to batch faces across requests (useful on a GPU).")
@click.option("--tls-cert", type=click.Path(exists=True, path_type=Path), envvar="FACEBANK_TLS_CERT")
@click.option("--tls-key", type=click.Path(exists=True, path_type=Path), envvar="FACEBANK_TLS_KEY")
@click.option("--tls-client-ca", type=click.Path(exists=True, path_type=Path), envvar="FACEBANK_TLS_CLIENT_CA", help="Require client certificates signed by this CA (mutual TLS).")
@click.option("--log-level", default="INFO", show_default=True)
def serve(data_dir, listen, keys_dir, device, backend, model_spec, threads, max_concurrent_rpcs, micro_batch_ms, tls_cert, tls_key, tls_client_ca, log_level) -> None:
    """Start the server (embedded LMDB + FAISS in a local data directory)."""
    import logging

    from facebank.server.app import serve_forever
    from facebank.server.config import ServerConfig

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    config = ServerConfig(
        data_dir=data_dir, listen=listen, keys_dir=keys_dir, device=device, backend=backend, model_spec=model_spec, threads=threads,
        max_concurrent_rpcs=max_concurrent_rpcs, micro_batch_wait_ms=micro_batch_ms,
        tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=tls_client_ca,
    )
    def ready(running) -> None:
        click.echo(f"facebank listening on {running.address}")
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
        emit_json({"collections": collections, "model_id": s.model_id, "device": s.device, "data_bytes": s.data_bytes, "pending_retrains": s.pending_retrains})
        return
    click.echo(f"model {s.model_id} on {s.device}; data {s.data_bytes / 2**20:.1f} MiB; pending retrains: {s.pending_retrains}")
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
        "sequence": r.sequence, "time_ms": r.time_ms, "collection": r.collection, "subject_hash": r.subject_hash,
        "removed": dict(sorted(r.removed.items())), "generation_before": r.generation_before, "generation_after": r.generation_after,
        "derived_clean": r.derived_clean, "snapshot_rewritten": r.snapshot_rewritten,
        "verification": {"probes": v.probes, "max_score": round(v.max_score, 6), "threshold": round(v.threshold, 6), "passed": v.passed},
        "note": r.note, "prev_hash": r.prev_hash, "hash": r.hash,
    }


@main.command()
@json_option
@click.pass_context
def receipts(ctx, as_json: bool) -> None:
    """List forget receipts and check their hash chain."""
    with client_from(ctx) as fb:
        r = fb.receipts()
    if as_json:
        emit_json({"chain_valid": r.chain_valid, "chain_error": r.chain_error, "receipts": [receipt_dict(x) for x in r.receipts]})
    else:
        for x in r.receipts:
            v = x.verification
            click.echo(
                f"#{x.sequence} {x.collection} subject {x.subject_hash[:16]}: removed {dict(x.removed)}; "
                f"derived clean: {x.derived_clean}; verification {'passed' if v.passed else 'FAILED'} "
                f"({v.probes} probes, max {v.max_score:.3f} < {v.threshold:.2f}){'; ' + x.note if x.note else ''}"
            )
        click.echo(f"chain: {'intact' if r.chain_valid else 'BROKEN: ' + r.chain_error} ({len(r.receipts)} receipts)")
    if not r.chain_valid:
        sys.exit(1)


from facebank import cli_faces, cli_admin, cli_photos  # noqa: E402  (register their commands)

cli_faces.register(main)
cli_admin.register(main)
cli_photos.register(main)
