"""No copyleft in the default install: every distribution `pip install facebank`
brings (its dependencies, recursively, without extras) is read for its licence
metadata (License-Expression, License, classifiers, else its licence file), and
none may be GPL or AGPL. Model weights have licences of their own: see the README."""

from __future__ import annotations

import re
from importlib import metadata

from packaging.requirements import Requirement

COPYLEFT = re.compile(r"(?<![LW])\bA?GPL|GNU (Affero )?General Public", re.I)  # LGPL (weak copyleft) is not matched


def default_install() -> dict[str, metadata.Distribution]:
    found: dict[str, metadata.Distribution] = {}
    todo = ["facebank"]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in found:
            continue
        dist = metadata.distribution(name)
        found[key] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def licence_of(dist: metadata.Distribution) -> str:
    """The distribution's own licence, most specific statement first: its SPDX
    expression, its licence classifiers, the opening of its License field, else the
    opening of its licence file. (Long License fields also list what a wheel bundles,
    e.g. scipy's libgfortran under GPL-3.0 WITH the GCC runtime exception, which
    places no obligation on programs linking it.)"""
    meta = dist.metadata
    if meta.get("License-Expression"):
        return meta["License-Expression"]
    classifiers = [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        return " ".join(classifiers)
    if meta.get("License"):
        return meta["License"][:300]
    files = [f for f in dist.files or [] if re.search(r"LICEN[CS]E|COPYING", f.name, re.I)]
    return files[0].locate().read_text(errors="replace")[:300] if files else ""


def test_no_gpl_or_agpl_in_the_default_install():
    dists = default_install()
    assert {"numpy", "faiss-cpu", "onnxruntime", "networkit"} <= set(dists)
    licences = {name: licence_of(dist) for name, dist in dists.items()}
    unknown = sorted(n for n, text in licences.items() if not text)
    assert not unknown, f"no licence found for {unknown}"
    copyleft = {n: text[:80] for n, text in licences.items() if COPYLEFT.search(text)}
    assert not copyleft, copyleft


def test_the_copyleft_check_recognises_gpl_and_agpl():
    assert COPYLEFT.search("GPL-3.0-or-later") and COPYLEFT.search("AGPL-3.0-only")
    assert COPYLEFT.search("License :: OSI Approved :: GNU General Public License v3 (GPLv3)")
    assert COPYLEFT.search("License :: OSI Approved :: GNU Affero General Public License v3")
    assert not COPYLEFT.search("LGPL-2.1-or-later") and not COPYLEFT.search("MIT") and not COPYLEFT.search("Apache-2.0")
