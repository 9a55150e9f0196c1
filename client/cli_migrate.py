"""`facebank migrate`: a collection moved to another model with every name kept."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click
from rich.console import Console

from facebank.bulk import images_under, progress_bar
from facebank.errors import FacebankError
from facebank.cli import client_from, emit_json, json_option


def register(main: click.Group) -> None:
    main.add_command(migrate)


@click.command()
@click.option("--collection", "-c", default="default", show_default=True)
@click.option("--model", help="The shipped model to move to: default or sface.")
@click.option("--from-photos", "photos", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="First give faces stored without a crop their crop back, from their source photos under this folder "
                   "(found by SHA-256; only the same face takes a crop).")
@click.option("--dry-run", is_flag=True, help="Say how many faces would be re-embedded, and how long it would take; change nothing.")
@json_option
@click.pass_context
def migrate(ctx, collection, model, photos, dry_run, as_json) -> None:
    """Re-embed every face of a collection from its kept crop with another model, then
    switch to it at once; searches go on with the old model meanwhile. Interrupted,
    run it again: it goes on where it stopped."""
    if not model and not photos:
        raise click.UsageError("name the model to move to (--model), or the photos to take missing crops from (--from-photos DIR), or both")
    console = Console(stderr=True)
    events = []
    with client_from(ctx) as fb:
        filled = _fill_from_photos(fb, collection, photos, console, as_json) if photos and not dry_run else None
        if not model:
            if as_json:
                emit_json({"crops": filled})
            return
        stream = fb.migrate(model, collection=collection, dry_run=dry_run)
        plan = next(iter(stream))
        events.append(plan)
        if not as_json:
            resumed = f", {plan.already_staged:,} already done by an interrupted run" if plan.already_staged else ""
            console.print(f"{collection}: {plan.total:,} faces to re-embed with {plan.model_id}{resumed}; "
                          f"about {plan.estimate_s:,.0f} s on this server")
            if plan.faces_without_crops:
                shown = ", ".join(map(str, plan.without_crops[:20]))
                console.print(f"{plan.faces_without_crops:,} faces have no kept crop and cannot be re-embedded: {shown}"
                              f"{' ...' if plan.faces_without_crops > 20 else ''}; delete them or enroll them again from their photos")
        if dry_run:
            if as_json:
                emit_json({"crops": filled, "plan": _plan_dict(plan)})
            return
        with progress_bar(console) as bar:
            task = bar.add_task("re-embedding", total=max(1, plan.total), completed=plan.done, rate="")
            for event in stream:
                events.append(event)
                if event.stage == "embed":
                    bar.update(task, completed=event.done, total=max(1, event.total))
                elif event.stage == "switch":
                    bar.update(task, description="switching", completed=bar.tasks[0].total)
    if as_json:
        emit_json({"crops": filled, "plan": _plan_dict(plan), "done": events[-1].stage == "done"})
    else:
        console.print(f"{collection} now uses {plan.model_id}; every identity, name and cluster kept")


def _plan_dict(plan) -> dict:
    return {"faces": plan.total, "model_id": plan.model_id, "already_staged": plan.already_staged, "estimate_s": round(plan.estimate_s, 1),
            "faces_without_crops": plan.faces_without_crops, "without_crops": list(plan.without_crops)}


def _fill_from_photos(fb, collection: str, root: Path, console: Console, as_json: bool) -> dict:
    """Send the photos under root that faces without a crop came from (by SHA-256); the
    server takes each crop again from the same face only. Returns what happened."""
    needed = fb.cropless_images(collection=collection)
    out = {"faces_filled": 0, "faces_unmatched": [], "photos_used": 0, "photos_not_found": 0, "errors": {}}
    if needed:
        paths = images_under(root)
        with progress_bar(console) as bar:
            task = bar.add_task("finding photos", total=max(1, len(paths)), rate="")
            for path in paths:
                bar.advance(task)
                data = path.read_bytes()
                sha = hashlib.sha256(data).hexdigest()
                if sha not in needed:
                    continue
                try:
                    r = fb.fill_crops(data, collection=collection)
                except FacebankError as err:  # one photo's problem; the others go on
                    out["errors"][str(path)] = err.message
                    console.print(f"[yellow]skipped[/] {path}: {err.message}", markup=True, highlight=False, soft_wrap=True)
                    continue
                needed.discard(sha)
                out["photos_used"] += 1
                out["faces_filled"] += len(r.filled)
                out["faces_unmatched"] += list(r.unmatched)
    out["photos_not_found"] = len(needed)
    if not as_json:
        line = f"{collection}: {out['faces_filled']:,} faces got their crop back from {out['photos_used']:,} photos"
        if out["faces_unmatched"]:
            line += f"; {len(out['faces_unmatched']):,} faces matched no face found again in their photo ({_ids(out['faces_unmatched'])})"
        if needed:
            line += f"; {len(needed):,} source photos were not under {root}"
        console.print(line, highlight=False, soft_wrap=True)
    return out


def _ids(ids: list[int]) -> str:
    return "face ids " + ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "")
