"""An HTML contact sheet of clusters: face thumbnails per person, largest first.

One self-contained file (thumbnails are embedded), readable in any browser,
made on the client from the photos it already has; nothing is uploaded.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

THUMB = 112
MARGIN = 0.25


def crop_window(size: tuple[int, int], box: list[float]) -> tuple[int, int, int, int]:
    """A square around the face with a margin, moved (and if need be shrunk) to lie
    inside the photo: no padding where the crop would leave it."""
    width, height = size
    x0, y0, x1, y1 = box
    side = min(max(x1 - x0, y1 - y0) * (1 + 2 * MARGIN), width, height)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(cx - side / 2, 0), width - side)
    top = min(max(cy - side / 2, 0), height - side)
    return int(left), int(top), int(left + side), int(top + side)


def thumbnail(photo: Path, box: list[float]) -> str:
    """The face in its photo, as a data: URI, its box drawn (empty if the photo is unreadable)."""
    try:
        with Image.open(photo) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            left, top, right, bottom = crop_window(im.size, box)
            crop = im.crop((left, top, right, bottom))
            scale = THUMB / max(1, right - left)
            crop = crop.resize((THUMB, THUMB))
            x0, y0, x1, y1 = ((box[0] - left) * scale, (box[1] - top) * scale, (box[2] - left) * scale, (box[3] - top) * scale)
            ImageDraw.Draw(crop).rectangle((x0, y0, x1, y1), outline=(255, 196, 0), width=2)
            buffer = io.BytesIO()
            crop.save(buffer, format="JPEG", quality=85)
    except (OSError, ValueError):
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def short_names(paths: list[str]) -> dict[str, str]:
    """For each path, its shortest tail of folders that no other path on the sheet shares
    (`2019/IMG_0001.jpg` beside `2020/IMG_0001.jpg`), so no two captions read the same."""
    parts = {p: p.split("/") for p in set(paths)}
    out = {}
    for path, pieces in parts.items():
        for n in range(1, len(pieces) + 1):
            tail = pieces[-n:]
            if sum(other[-n:] == tail for other in parts.values()) == 1:
                break
        out[path] = "/".join(tail)
    return out


def _faces(root: Path, faces: list[dict], names: dict[str, str]) -> str:
    cells = []
    for face in faces:
        uri = thumbnail(root / face["image"], face["box"])
        title = html.escape(face["image"])
        img = f'<img src="{uri}" alt="{title}" loading="lazy">' if uri else '<div class="missing">?</div>'
        cells.append(f'<figure title="{title}">{img}<figcaption>{html.escape(names[face["image"]])}</figcaption></figure>')
    return "\n".join(cells)


def write_contact_sheet(out: Path, root: Path, result: dict, *, show_ids: bool = True) -> Path:
    """show_ids: name clusters by their ids (a kept collection); else number them 1..n
    (a scratch run's ids mean nothing once it is over)."""
    path = out if out.suffix.lower() in (".html", ".htm") else out / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    clusters = sorted(result["clusters"], key=lambda c: -len(c["faces"]))
    names = short_names([f["image"] for c in clusters for f in c["faces"]] + [f["image"] for f in result["noise"]])
    sections = []
    for number, c in enumerate(clusters, start=1):
        label = html.escape(c.get("identity") or f"person {c['id'] if show_ids else number}")
        where = f"cluster {c['id']}, " if show_ids else ""
        sections.append(f'<section><h2>{label} <small>{where}{len(c["faces"])} faces</small></h2><div class="grid">{_faces(root, c["faces"], names)}</div></section>')
    if result["noise"]:
        sections.append(f'<section><h2>Not grouped <small>{len(result["noise"])} faces with no confident match</small></h2><div class="grid">{_faces(root, result["noise"], names)}</div></section>')
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>facebank: {len(clusters)} people in {html.escape(root.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; background: #fafafa; color: #222; }}
h1 {{ font-weight: 600; }} h2 {{ font-size: 1.1rem; margin: 1.5rem 0 .5rem; }} small {{ color: #777; font-weight: normal; }}
.grid {{ display: flex; flex-wrap: wrap; gap: .5rem; }}
figure {{ margin: 0; width: {THUMB}px; }} img, .missing {{ width: {THUMB}px; height: {THUMB}px; object-fit: cover; border-radius: 6px; background: #ddd; }}
figcaption {{ font-size: .7rem; color: #666; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }}
</style></head><body>
<h1>{len(clusters)} people in {html.escape(str(root))}</h1>
{''.join(sections)}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path
