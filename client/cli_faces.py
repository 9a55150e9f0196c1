"""`facebank enroll | search | verify | forget | identities`."""

from __future__ import annotations

from pathlib import Path

import sys

import click
from rich.console import Console

from facebank.bulk import NOT_AN_IMAGE, Tally, files_under, identity_folders, report_skip, stream_items
from facebank.cli import client_from, collection_option, emit_json, json_option, receipt_dict
from facebank.errors import InvalidArgument
from facebank.v1 import facebank_pb2 as pb


def box(b: pb.Box) -> list[float]:
    return [round(b.x0, 1), round(b.y0, 1), round(b.x1, 1), round(b.y1, 1)]


def quality(q: pb.Quality) -> dict:
    return {
        "passed": q.passed, "reasons": list(q.reasons), "face_size": round(q.face_size, 1),
        "detection_score": round(q.detection_score, 4), "sharpness": round(q.sharpness, 1),
        "yaw": round(q.yaw, 1), "pitch": round(q.pitch, 1), "roll": round(q.roll, 1),
    }


def match(m: pb.IdentityMatch) -> dict:
    return {"identity": m.identity_id, "display_name": m.display_name, "score": round(m.score, 4), "face_ids": list(m.face_ids), "metadata": dict(m.metadata)}


def parse_metadata(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidArgument(f"--meta {pair!r} must look like key=value")
        out[key] = value
    return out


def register(main: click.Group) -> None:
    main.add_command(enroll)
    main.add_command(search)
    main.add_command(verify)
    main.add_command(forget)
    main.add_command(identities)
    main.add_command(crop)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--identity", "identity_id", help="Identity to enroll the images for (created if new). Omit to enroll a folder of per-identity sub-folders.")
@collection_option
@click.option("--name", "display_name", default="", help="Display name (new identity).")
@click.option("--meta", multiple=True, help="Metadata key=value (repeatable).")
@click.option("--accept-low-quality", is_flag=True, help="Enroll faces that fail the quality check.")
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel streams for a folder.")
@json_option
@click.pass_context
def enroll(ctx, paths, identity_id, collection, display_name, meta, accept_low_quality, workers, as_json) -> None:
    """Enroll IMAGE... for --identity ID, or a DIR with one sub-folder per identity."""
    metadata = parse_metadata(meta)
    with client_from(ctx) as fb:
        if identity_id is not None:
            if any(p.is_dir() for p in paths):
                raise InvalidArgument("with --identity, give image files; to enroll a folder of identities, drop --identity")
            r = fb.enroll(identity_id, list(paths), collection=collection, display_name=display_name, metadata=metadata, accept_low_quality=accept_low_quality)
            if as_json:
                emit_json({"identity": r.identity.id, "faces": r.identity.face_count, "images": [
                    {"image": str(p), "face_id": i.face.face_id, "already_enrolled": i.already_enrolled} for p, i in zip(paths, r.images)]})
            else:
                new = sum(not i.already_enrolled for i in r.images)
                click.echo(f"enrolled {new} new face(s) for {r.identity.id!r} ({r.identity.face_count} in all)")
            return
        if len(paths) != 1 or not paths[0].is_dir():
            raise InvalidArgument("give one folder (with one sub-folder per identity), or image files with --identity ID")
        _enroll_folder(fb, paths[0], collection, metadata, accept_low_quality, workers, as_json)


def _enroll_folder(fb, root: Path, collection: str, metadata: dict, accept_low_quality: bool, workers: int, as_json: bool) -> None:
    console = Console(stderr=True)
    pairs, loose = identity_folders(root)
    others = files_under(root)[1]
    tally = Tally()
    for path in loose:
        report_skip(console, tally, str(path.relative_to(root)), "NOT_IN_IDENTITY_FOLDER", "not in an identity folder; put it in a sub-folder named after the identity")
    for path in others:
        report_skip(console, tally, str(path.relative_to(root)), "NOT_AN_IMAGE", NOT_AN_IMAGE)
    quality = pb.QUALITY_FILTER_NONE if accept_low_quality else pb.QUALITY_FILTER_DEFAULT

    def items():
        for identity_id, path in pairs:
            rel = str(path.relative_to(root))
            try:
                data = path.read_bytes()
            except OSError as err:
                report_skip(console, tally, rel, "UNREADABLE_FILE", err.strerror or str(err))
                continue
            yield pb.BulkEnrollItem(item_id=rel, collection=collection, identity_id=identity_id, metadata=metadata,
                                    image=pb.Image(data=data, source_ref=rel), quality_filter=quality)

    def handle(result: pb.BulkEnrollResult) -> None:
        tally.done += 1
        if result.HasField("failure"):
            report_skip(console, tally, result.item_id, result.failure.reason or result.failure.code, result.failure.message)
        elif result.enrolled.already_enrolled:
            tally.already += 1
        else:
            tally.new += 1
            tally.faces += 1

    stream_items(items, fb.bulk_enroll, handle, total=len(pairs), label="enrolling", console=console, workers=workers)
    if as_json:
        emit_json(tally.as_dict())
        return
    rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(tally.rejected.items())) or "none"
    click.echo(f"enrolled {tally.new}, already enrolled {tally.already}, skipped: {rejected} ({len(pairs) + len(loose) + len(others)} files)")


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--top-k", type=int, default=5, show_default=True)
@click.option("--threshold", type=float, help="Override the collection's threshold.")
@collection_option
@click.option("--where", multiple=True, help="Only identities whose metadata has key=value (repeatable).")
@click.option("--accept-low-quality", is_flag=True, help="Also search faces that fail the quality check (marked as such).")
@json_option
@click.pass_context
def search(ctx, image, top_k, threshold, collection, where, accept_low_quality, as_json) -> None:
    """Who is in IMAGE? Every face found, with its best matches."""
    with client_from(ctx) as fb:
        r = fb.search(image, collection=collection, top_k=top_k, threshold=threshold, filter=parse_metadata(where),
                      accept_low_quality=accept_low_quality)
    faces = [{"box": box(f.face.box), "quality": quality(f.face.quality), "matches": [match(m) for m in f.matches]} for f in r.faces]
    if as_json:
        emit_json({"faces": faces, "threshold": round(r.threshold, 4), "faces_below_quality": r.faces_below_quality})
        return
    if not faces:
        click.echo("no face found" if not r.faces_below_quality else "no face passed the quality check")
    for i, f in enumerate(faces, start=1):
        best = f["matches"][0] if f["matches"] else None
        who = f"{best['identity']} ({best['score']:.3f})" if best else "unknown"
        low = "" if f["quality"]["passed"] else f" [low quality: {', '.join(f['quality']['reasons'])}]"
        click.echo(f"face {i} at {f['box']}: {who}{low}")
    if r.faces_below_quality:
        click.echo(f"{r.faces_below_quality} more detection(s) failed the quality check and were left out "
                   "(too small, blurred or turned away); --accept-low-quality searches them too")


@click.command()
@click.argument("image_a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("image_b", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--identity", "identity_id", help="Verify IMAGE_A against an enrolled identity instead of IMAGE_B.")
@click.option("--face", "face", type=int, default=0, help="Which face of IMAGE_A, by size (1 = the largest, the default).")
@click.option("--other-face", "other_face", type=int, default=0, help="Which face of IMAGE_B, by size.")
@click.option("--threshold", type=float)
@collection_option
@json_option
@click.pass_context
def verify(ctx, image_a, image_b, identity_id, face, other_face, threshold, collection, as_json) -> None:
    """Are the people in IMAGE_A and IMAGE_B (or --identity) the same person?"""
    if (image_b is None) == (identity_id is None):
        raise InvalidArgument("give IMAGE_B or --identity ID (one of them)")
    with client_from(ctx) as fb:
        r = fb.verify(image_a, other_image=image_b, identity_id=identity_id, collection=collection, threshold=threshold,
                      face=face, other_face=other_face)
    used = {"image": {"faces": r.faces_in_image, "face_used": r.face_used, "box": box(r.face.box)}}
    if image_b is not None:
        used["other_image"] = {"faces": r.faces_in_other_image, "face_used": r.other_face_used, "box": box(r.other_face.box)}
    if as_json:
        emit_json({"match": r.match, "score": round(r.score, 4), "threshold": round(r.threshold, 4), **used})
    else:
        for name, path in (("image", image_a), ("other_image", image_b)):
            u = used.get(name)
            if u and u["faces"] > 1:
                click.echo(f"{path}: {u['faces']} faces; compared face {u['face_used']} at {u['box']} "
                           f"({'the largest' if u['face_used'] == 1 else 'by size'}; choose another with --{'face' if name == 'image' else 'other-face'} N)")
        click.echo(f"{'same person' if r.match else 'different people'} (score {r.score:.3f}, threshold {r.threshold:.2f})")


@click.command()
@click.argument("identity_id")
@collection_option
@click.option("--strict", is_flag=True, help="Also wait until retrained indexes no longer reflect it.")
@json_option
@click.pass_context
def forget(ctx, identity_id, collection, strict, as_json) -> None:
    """Forget ID: crypto-shred and erase every trace; prints the receipt."""
    with client_from(ctx) as fb:
        r = fb.forget(identity_id, collection=collection, strict=strict)
    v = r.verification
    if as_json:
        emit_json(receipt_dict(r))
    else:
        click.echo(
            f"forgotten: receipt #{r.sequence} subject {r.subject_hash[:16]}; removed {dict(sorted(r.removed.items()))}; "
            f"derived structures {'clean' if r.derived_clean else 'retraining in background'}; "
            f"verification {verification_line(v)}"
        )
    if not v.passed:
        click.echo(f"error: the forget of {identity_id!r} committed, but its verification failed: {verification_line(v)}; "
                   "see the server log", err=True)
        sys.exit(2)


def verification_line(v) -> str:
    if v.method == "not-run":
        return "not run"
    if v.method == "answer-filter":
        return (f"{'passed' if v.passed else 'FAILED'}: {v.returned} of its {v.face_ids} face(s) can still reach an answer "
                f"(the answer filter every search applies; {v.in_index} awaiting removal from the index; --strict also searches the index)")
    if v.method == "catalog-scan":
        return f"{'passed' if v.passed else 'FAILED'} ({v.in_index} rows of the collection left)"
    state = "passed" if v.passed else "FAILED"
    return (f"{state}: {v.returned} of its {v.face_ids} face(s) returned by a search with its own {v.probes} embedding(s); "
            f"{v.in_index} still in the index, excluded from answers; best other identity {v.max_score:.3f}")


@click.command()
@collection_option
@json_option
@click.pass_context
def identities(ctx, collection, as_json) -> None:
    """List the identities of a collection."""
    with client_from(ctx) as fb:
        rows = [
            {"id": i.id, "display_name": i.display_name, "faces": i.face_count, "metadata": dict(i.metadata)}
            for i in fb.list_identities(collection=collection)
        ]
    if as_json:
        emit_json({"identities": rows})
        return
    for row in rows:
        click.echo(f"{row['id']}\t{row['faces']} face(s)\t{row['display_name']}")
    click.echo(f"{len(rows)} identities", err=True)


@click.command()
@click.argument("face_id", type=int)
@collection_option
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the JPEG (default: face-ID.jpg).")
@click.pass_context
def crop(ctx, face_id, collection, out) -> None:
    """Write the aligned face kept for FACE_ID (a JPEG; needs the enroll role)."""
    with client_from(ctx) as fb:
        result = fb.face_crop(face_id, collection=collection)
    out = out or Path(f"face-{face_id}.jpg")
    out.write_bytes(result.image)
    owner = f" of {result.face.identity_id!r}" if result.face.identity_id else ""
    click.echo(f"wrote {out} (face {face_id}{owner}, {len(result.image):,} bytes, {result.media_type})")
