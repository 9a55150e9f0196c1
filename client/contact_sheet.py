"""An HTML contact sheet of clusters: face thumbnails per person, largest first.

One self-contained file (thumbnails are embedded), readable in any browser,
made on the client from the photos it already has; nothing is uploaded.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from PIL import Image, ImageOps

THUMB = 112
MARGIN = 0.25


def thumbnail(photo: Path, box: list[float]) -> str:
    """A square crop around the face, as a data: URI (empty if the photo is unreadable)."""
    try:
        with Image.open(photo) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            x0, y0, x1, y1 = box
            side = max(x1 - x0, y1 - y0) * (1 + 2 * MARGIN)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            crop = im.crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))
            crop.thumbnail((THUMB, THUMB))
            buffer = io.BytesIO()
            crop.save(buffer, format="JPEG", quality=85)
    except (OSError, ValueError):
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _faces(root: Path, faces: list[dict]) -> str:
    cells = []
    for face in faces:
        uri = thumbnail(root / face["image"], face["box"])
        title = html.escape(face["image"])
        img = f'<img src="{uri}" alt="{title}">' if uri else '<div class="missing">?</div>'
        cells.append(f'<figure title="{title}">{img}<figcaption>{title}</figcaption></figure>')
    return "\n".join(cells)


def write_contact_sheet(out: Path, root: Path, result: dict) -> Path:
    path = out if out.suffix.lower() in (".html", ".htm") else out / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    clusters = sorted(result["clusters"], key=lambda c: -len(c["faces"]))
    sections = []
    for c in clusters:
        label = html.escape(c.get("identity") or f"person {c['id']}")
        sections.append(f'<section><h2>{label} <small>cluster {c["id"]}, {len(c["faces"])} faces</small></h2><div class="grid">{_faces(root, c["faces"])}</div></section>')
    if result["noise"]:
        sections.append(f'<section><h2>Not grouped <small>{len(result["noise"])} faces with no confident match</small></h2><div class="grid">{_faces(root, result["noise"])}</div></section>')
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
