"""`facebank ingest | cluster | clusters`: photo collections grouped by person."""

from __future__ import annotations

import uuid
from pathlib import Path

import click
from rich.console import Console

from facebank.bulk import NOT_AN_IMAGE, Tally, files_under, progress_bar, report_skip, stream_items
from facebank.cli import client_from, collection_option, emit_json, json_option
from facebank.errors import InvalidArgument
from facebank.v1 import facebank_pb2 as pb


SCRATCH_LEASE_S = 3600  # a scratch collection left by an interrupted run is dropped after this (or at the next start)


def register(main: click.Group) -> None:
    main.add_command(ingest)
    main.add_command(cluster)
    main.add_command(clusters)


def ingest_folder(fb, root: Path, collection: str, console: Console, workers: int = 1) -> Tally:
    """Stream every photo under root; faces are stored with the path relative to root."""
    files, others = files_under(root)
    tally = Tally()
    for path in others:
        report_skip(console, tally, path.relative_to(root).as_posix(), "NOT_AN_IMAGE", NOT_AN_IMAGE)

    def items():
        for path in files:
            rel = path.relative_to(root).as_posix()
            try:
                data = path.read_bytes()
            except OSError as err:
                report_skip(console, tally, rel, "UNREADABLE_FILE", err.strerror or str(err))
                continue
            yield pb.IngestItem(item_id=rel, collection=collection, image=pb.Image(data=data, source_ref=rel))

    def handle(result: pb.IngestResult) -> None:
        tally.done += 1
        if result.HasField("failure"):
            report_skip(console, tally, result.item_id, result.failure.reason or result.failure.code, result.failure.message)
        elif result.already_ingested:
            tally.already += 1
        else:
            tally.new += 1
            tally.faces += len(result.faces)

    stream_items(items, fb.ingest, handle, total=len(files), label="detecting + embedding", console=console, workers=workers)
    return tally


def run_clustering(fb, collection: str, console: Console, *, full: bool = False) -> pb.ClusteringSummary:
    summary = pb.ClusteringSummary()
    with progress_bar(console) as bar:
        tasks: dict[str, int] = {}
        for event in fb.cluster(collection=collection, full=full):
            if event.HasField("summary"):
                summary = event.summary
                continue
            label = {"assign": "assigning to clusters", "graph": "kNN graph", "cluster": "clustering", "save": "saving"}.get(event.stage, event.stage)
            if event.stage not in tasks:
                tasks[event.stage] = bar.add_task(label, total=max(1, event.total), rate="")
            bar.update(tasks[event.stage], completed=event.done if event.total else 1, total=max(1, event.total))
    return summary


@click.command()
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@collection_option
@click.option("--workers", type=int, default=1, show_default=True)
@json_option
@click.pass_context
def ingest(ctx, root, collection, workers, as_json) -> None:
    """Store every face of every photo under ROOT, unassigned, for clustering."""
    console = Console(stderr=True)
    with client_from(ctx) as fb:
        tally = ingest_folder(fb, root, collection, console, workers)
    if as_json:
        emit_json(tally.as_dict())
    else:
        click.echo(f"ingested {tally.new} photo(s) with {tally.faces} face(s); {tally.already} already ingested; {len(tally.failures)} skipped")


@click.command()
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--collection", "-c", default=None, help="Keep the faces in this collection (default: a scratch collection, dropped after).")
@click.option("--out", type=click.Path(path_type=Path), help="Write an HTML contact sheet here (a .html file, or a folder for index.html).")
@click.option("--full", is_flag=True, help="Re-cluster everything (keeps ids and names where membership agrees).")
@click.option("--workers", type=int, default=1, show_default=True)
@json_option
@click.pass_context
def cluster(ctx, root, collection, out, full, workers, as_json) -> None:
    """Ingest the photos under ROOT and group their faces by person."""
    console = Console(stderr=True)
    scratch = collection is None
    name = collection or f"scratch-{uuid.uuid4().hex[:12]}"
    with client_from(ctx) as fb:
        if scratch:
            fb.create_collection(name, scratch_lease_seconds=SCRATCH_LEASE_S)
        try:
            tally = ingest_folder(fb, root, name, console, workers)
            summary = run_clustering(fb, name, console, full=full)
            listing = fb.list_clusters(collection=name, include_faces=True)
        finally:
            if scratch:
                fb.drop_collection(name)
    result = cluster_listing(listing)
    if out is not None:
        from facebank.contact_sheet import write_contact_sheet

        path = write_contact_sheet(out, root, result, show_ids=not scratch)
        console.print(f"contact sheet: {path}", highlight=False)
    if as_json:
        emit_json(result)
    else:
        click.echo(
            f"{len(result['clusters'])} people in {tally.done} photos ({tally.faces} faces); {len(result['noise'])} faces unclustered; "
            f"{summary.cannot_link_splits} cannot-link conflicts resolved"
        )
        for c in result["clusters"]:
            label = f" {c['identity']}" if c.get("identity") else ""
            click.echo(f"  cluster {c['id']}{label}: {len(c['faces'])} faces, e.g. {c['faces'][0]['image']}")


def cluster_listing(listing: pb.ListClustersResponse) -> dict:
    def face(f: pb.Face) -> dict:
        b = f.detection.box
        return {"image": f.source_ref, "box": [round(b.x0, 1), round(b.y0, 1), round(b.x1, 1), round(b.y1, 1)]}

    return {
        "clusters": [
            {"id": c.cluster_id, **({"identity": c.identity_id} if c.identity_id else {}), "faces": [face(f) for f in c.faces]}
            for c in listing.clusters if c.faces
        ],
        "noise": [face(f) for f in listing.unclustered],
    }


@click.group(invoke_without_command=True)
@collection_option
@json_option
@click.pass_context
def clusters(ctx, collection, as_json) -> None:
    """List a collection's clusters (or merge / split / name them)."""
    if ctx.invoked_subcommand:
        ctx.obj["collection"] = collection
        return
    with client_from(ctx) as fb:
        result = cluster_listing(fb.list_clusters(collection=collection, include_faces=True))
    if as_json:
        emit_json(result)
        return
    for c in result["clusters"]:
        click.echo(f"{c['id']}\t{len(c['faces'])} faces\t{c.get('identity', '')}")
    click.echo(f"{len(result['noise'])} faces unclustered", err=True)


@clusters.command("run")
@click.option("--full", is_flag=True)
@click.pass_context
def clusters_run(ctx, full) -> None:
    """Run a clustering pass (incremental unless --full)."""
    with client_from(ctx) as fb:
        s = run_clustering(fb, ctx.obj["collection"], Console(stderr=True), full=full)
    click.echo(f"{s.clusters} clusters ({s.new_clusters} new); {s.assigned} faces joined existing clusters; {s.unclustered} wait")


@clusters.command("merge")
@click.argument("into", type=int)
@click.argument("others", type=int, nargs=-1, required=True)
@click.pass_context
def clusters_merge(ctx, into, others) -> None:
    with client_from(ctx) as fb:
        c = fb.merge_clusters(into, others, collection=ctx.obj["collection"])
    click.echo(f"cluster {c.cluster_id}: {c.size} faces")


@clusters.command("split")
@click.argument("cluster_id", type=int)
@click.argument("face_ids", type=int, nargs=-1, required=True)
@click.pass_context
def clusters_split(ctx, cluster_id, face_ids) -> None:
    with client_from(ctx) as fb:
        c = fb.split_cluster(cluster_id, face_ids, collection=ctx.obj["collection"])
    click.echo(f"new cluster {c.cluster_id}: {c.size} faces")


@clusters.command("move")
@click.argument("into", type=int)
@click.argument("face_ids", type=int, nargs=-1, required=True)
@click.pass_context
def clusters_move(ctx, into, face_ids) -> None:
    """Move faces (a wrong face, a missed one) into cluster INTO, and its identity if named."""
    with client_from(ctx) as fb:
        c = fb.move_faces(face_ids, into, collection=ctx.obj["collection"])
    click.echo(f"cluster {c.cluster_id}: {c.size} faces" + (f" ({c.identity_id!r})" if c.identity_id else ""))


@clusters.command("name")
@click.argument("cluster_id", type=int)
@click.argument("identity_id")
@click.option("--name", "display_name", default="")
@click.pass_context
def clusters_name(ctx, cluster_id, identity_id, display_name) -> None:
    """Name a cluster: it becomes (or joins) identity IDENTITY_ID, searchable by 1:N search."""
    if not identity_id:
        raise InvalidArgument("give the identity id to name the cluster with")
    with client_from(ctx) as fb:
        i = fb.name_cluster(cluster_id, identity_id, collection=ctx.obj["collection"], display_name=display_name)
    click.echo(f"cluster {cluster_id} is now {i.id!r} ({i.face_count} faces enrolled)")
