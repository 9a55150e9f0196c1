"""Readable SDK results: compact `repr` and `str` for the messages people print.

Protobuf prints a message as its text format (`x0: 260.209473` on four lines
for one box); these show what a person looks for. Installed on the
`facebank.v1` classes when the SDK is imported; the messages, their fields and
their wire format are unchanged.
"""

from __future__ import annotations

from facebank.v1 import facebank_pb2 as pb


def _box(b: pb.Box) -> str:
    return f"Box({b.x0:.0f}, {b.y0:.0f}, {b.x1:.0f}, {b.y1:.0f})"


def _point(p: pb.Point) -> str:
    return f"Point({p.x:.0f}, {p.y:.0f})"


def _quality(q: pb.Quality) -> str:
    return "Quality(passed)" if q.passed else f"Quality(failed: {', '.join(q.reasons)})"


def _match(m: pb.IdentityMatch) -> str:
    return f"Match({m.identity_id!r}, score={m.score:.3f})"


def _detected(f: pb.DetectedFace) -> str:
    return f"DetectedFace({_box(f.box)}, score={f.detection_score:.2f}, {_quality(f.quality)})"


def _face_result(r: pb.FaceSearchResult) -> str:
    who = ", ".join(_match(m) for m in r.matches) or "unknown"
    return f"FaceSearchResult({_box(r.face.box)}: {who})"


def _search(r: pb.SearchByImageResponse) -> str:
    low = f", {r.faces_below_quality} below the quality gate" if r.faces_below_quality else ""
    return f"SearchByImageResponse(threshold={r.threshold:.2f}{low}, faces=[{', '.join(_face_result(f) for f in r.faces)}])"


def _verify(r: pb.VerifyResponse) -> str:
    return f"VerifyResponse(match={r.match}, score={r.score:.3f}, threshold={r.threshold:.2f}, face {r.face_used} of {r.faces_in_image})"


def _identity(i: pb.Identity) -> str:
    return f"Identity({i.id!r}, name={i.display_name!r}, faces={i.face_count})"


def _face(f: pb.Face) -> str:
    who = f" of {f.identity_id!r}" if f.identity_id else ""
    return f"Face({f.face_id}{who}, {_box(f.detection.box)}, {f.source_ref or f.image_sha256[:12]})"


_FORMATS = {
    pb.Box: (_box, True), pb.Point: (_point, True), pb.Quality: (_quality, True), pb.IdentityMatch: (_match, True),
    pb.DetectedFace: (_detected, True), pb.FaceSearchResult: (_face_result, True), pb.SearchByImageResponse: (_search, False),
    pb.VerifyResponse: (_verify, False), pb.Identity: (_identity, False), pb.Face: (_face, True),
}


def install() -> None:
    """Idempotent. Small value types get the compact form for `str` too; whole
    responses keep `str` as protobuf text (every field), and get it for `repr`."""
    for cls, (fmt, as_str) in _FORMATS.items():
        cls.__repr__ = fmt
        if as_str:
            cls.__str__ = fmt
