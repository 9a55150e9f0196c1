"""`facebank collections ...` and `facebank keys ...`."""

from __future__ import annotations

from pathlib import Path

import click

from facebank.cli import _kind_name, client_from, emit_json, json_option
from facebank.v1 import facebank_pb2 as pb


def register(main: click.Group) -> None:
    main.add_command(collections)
    main.add_command(keys)


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def collections(ctx, as_json) -> None:
    """List collections (or create / drop / set one)."""
    if ctx.invoked_subcommand:
        return
    with client_from(ctx) as fb:
        rows = [
            {"name": c.name, "identities": c.stats.identities, "faces": c.stats.faces, "unassigned": c.stats.unassigned,
             "index": _kind_name(c.stats.active_index), "threshold": round(c.threshold, 4), "model_id": c.model_id,
             "scratch": bool(c.scratch_lease_seconds)}
            for c in fb.list_collections()
        ]
    if as_json:
        emit_json({"collections": rows})
    else:
        for r in rows:
            click.echo(f"{r['name']}\t{r['identities']} identities\t{r['faces']} faces\t{r['unassigned']} unassigned\t{r['index']}"
                       f"\tthreshold {r['threshold']}{chr(9) + 'scratch' if r['scratch'] else ''}")


index_choice = click.Choice(["auto", "flat", "ivf", "ivf_sq8", "hnsw"])


@collections.command("create")
@click.argument("name")
@click.option("--index", type=index_choice, default="auto", show_default=True)
@click.option("--nprobe", type=int, default=0, help="IVF lists visited per query (0 = chosen by size).")
@click.option("--threshold", type=float, help="Open-set threshold (cosine).")
@click.option("--crops/--no-crops", "keep_crops", default=None,
              help="Keep each face's aligned crop, sealed (review, model migration); --no-crops keeps templates only. Default: the server's.")
@click.pass_context
def create(ctx, name, index, nprobe, threshold, keep_crops) -> None:
    """Create a collection."""
    with client_from(ctx) as fb:
        c = fb.create_collection(name, index=index, nprobe=nprobe, threshold=threshold, keep_crops=keep_crops)
    crops = "face crops kept" if c.keep_crops else "templates only, no face crops"
    click.echo(f"created collection {c.name!r} (model {c.model_id}, threshold {c.threshold:.2f}, {crops})")


@collections.command("set")
@click.argument("name")
@click.option("--index", type=index_choice)
@click.option("--nprobe", type=int, default=0)
@click.option("--threshold", type=float)
@click.option("--crops", "keep_crops", is_flag=True, default=None,
              help="Keep crops from now on (then `facebank migrate --from-photos DIR` fills the older faces').")
@click.pass_context
def set_(ctx, name, index, nprobe, threshold, keep_crops) -> None:
    """Change a collection's threshold or index (rebuilt in the background), or start keeping crops."""
    with client_from(ctx) as fb:
        c = fb.update_collection(name, threshold=threshold, index=index, nprobe=nprobe, keep_crops=keep_crops)
    crops = "face crops kept" if c.keep_crops else "no face crops"
    click.echo(f"collection {c.name!r}: index {_kind_name(c.index.kind)}, nprobe {c.index.nprobe or 'auto'}, threshold {c.threshold:.2f}, {crops}")


@collections.command("drop")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.pass_context
def drop(ctx, name, yes) -> None:
    """Drop a collection: crypto-shred every identity and face in it."""
    if not yes:
        click.confirm(f"Forget everyone in collection {name!r}?", abort=True)
    with client_from(ctx) as fb:
        r = fb.drop_collection(name)
    click.echo(f"dropped {name!r}: {r.identities_forgotten} identities forgotten, {r.faces_removed} faces removed")


@click.group()
def keys() -> None:
    """API keys: create, list, revoke (through the server, or --data DIR while it is stopped)."""


data_option = click.option("--data", "data_dir", type=click.Path(path_type=Path), help="Work on this data directory directly (server stopped).")
keys_dir_option = click.option("--keys-dir", type=click.Path(path_type=Path), envvar="FACEBANK_KEYS_DIR",
                               help="With --data: where its master key and data keys live (default DATA/keys).")


def _keys_backend(ctx, data_dir: Path | None, keys_dir: Path | None):
    """The server's API, or the data directory itself when the server is not running."""
    if data_dir is None:
        return _RemoteKeys(client_from(ctx))
    from facebank.index.store import FaceStore
    from facebank.server.auth import ApiKeys

    return _LocalKeys(ApiKeys(FaceStore(data_dir, keys_dir=keys_dir)))


class _RemoteKeys:
    def __init__(self, fb) -> None:
        self.fb = fb

    def create(self, name, role, collections):
        r = self.fb.create_api_key(name, role, collections)
        return r.key.key_id, r.secret

    def list(self):
        return [(k.key_id, k.name, pb.Role.Name(k.role).removeprefix("ROLE_").lower(), list(k.collections)) for k in self.fb.list_api_keys()]

    def revoke(self, key_id):
        self.fb.revoke_api_key(key_id)

    def close(self):
        self.fb.close()


class _LocalKeys:
    def __init__(self, keys) -> None:
        self.keys = keys

    def create(self, name, role, collections):
        rec, secret = self.keys.create(name, role, list(collections))
        return rec.key_id, secret

    def list(self):
        return [(r.key_id, r.name, r.role, r.collections) for r in self.keys.list()]

    def revoke(self, key_id):
        self.keys.revoke(key_id)

    def close(self):
        self.keys.store.close()


@keys.command("create")
@click.option("--name", default="", help="What the key is for.")
@click.option("--role", type=click.Choice(["search", "enroll", "admin"]), required=True)
@click.option("--collection", "collections", multiple=True, help="Limit the key to this collection (repeatable).")
@data_option
@keys_dir_option
@click.pass_context
def keys_create(ctx, name, role, collections, data_dir, keys_dir) -> None:
    """Create a key; its secret is printed once (only a hash is stored)."""
    backend = _keys_backend(ctx, data_dir, keys_dir)
    try:
        key_id, secret = backend.create(name, role, collections)
    finally:
        backend.close()
    click.echo(f"created key {key_id} ({role}); keep this secret, it is shown only once:", err=True)
    click.echo(secret)


@keys.command("list")
@data_option
@keys_dir_option
@json_option
@click.pass_context
def keys_list(ctx, data_dir, keys_dir, as_json) -> None:
    backend = _keys_backend(ctx, data_dir, keys_dir)
    try:
        rows = backend.list()
    finally:
        backend.close()
    if as_json:
        emit_json({"keys": [{"key_id": k, "name": n, "role": r, "collections": c} for k, n, r, c in rows]})
        return
    for key_id, name, role, cols in rows:
        click.echo(f"{key_id}\t{role}\t{name}\t{','.join(cols) or 'all collections'}")


@keys.command("revoke")
@click.argument("key_id")
@data_option
@keys_dir_option
@click.pass_context
def keys_revoke(ctx, key_id, data_dir, keys_dir) -> None:
    backend = _keys_backend(ctx, data_dir, keys_dir)
    try:
        backend.revoke(key_id)
    finally:
        backend.close()
    click.echo(f"revoked key {key_id}")
