"""`facebank migrate`: a collection moved to another model with every name kept."""

from __future__ import annotations

import click
from rich.console import Console

from facebank.bulk import progress_bar
from facebank.cli import client_from, emit_json, json_option


def register(main: click.Group) -> None:
    main.add_command(migrate)


@click.command()
@click.option("--collection", "-c", default="default", show_default=True)
@click.option("--model", required=True, help="The shipped model to move to: default or sface.")
@click.option("--dry-run", is_flag=True, help="Say how many faces would be re-embedded, and how long it would take; change nothing.")
@json_option
@click.pass_context
def migrate(ctx, collection, model, dry_run, as_json) -> None:
    """Re-embed every face of a collection from its kept crop with another model, then
    switch to it at once; searches go on with the old model meanwhile. Interrupted,
    run it again: it goes on where it stopped."""
    console = Console(stderr=True)
    events = []
    with client_from(ctx) as fb:
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
                emit_json({"plan": _plan_dict(plan)})
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
        emit_json({"plan": _plan_dict(plan), "done": events[-1].stage == "done"})
    else:
        console.print(f"{collection} now uses {plan.model_id}; every identity, name and cluster kept")


def _plan_dict(plan) -> dict:
    return {"faces": plan.total, "model_id": plan.model_id, "already_staged": plan.already_staged, "estimate_s": round(plan.estimate_s, 1),
            "faces_without_crops": plan.faces_without_crops, "without_crops": list(plan.without_crops)}
