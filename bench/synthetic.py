"""Identity-structured synthetic embeddings that behave like ArcFace's.

Identity centres are random directions on the 512-d sphere (so two people
score about 0 +- 0.05, at most ~0.3); each face is its centre plus noise of
norm s ~ U(0.5, 1.0), so two faces of one person score 1/sqrt((1+s1^2)(1+s2^2)),
between 0.5 and 0.8, as genuine pairs do with real photos. A small fraction of
identities are "siblings" of another, their centres at cosine 0.55: their
faces score 0.28-0.44 against each other, the hard impostors. Fixed seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIM = 512


@dataclass
class Gallery:
    centres: np.ndarray        # (n_ids, dim)
    siblings: dict[int, int]   # sibling id -> the identity it resembles

    def faces(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One face per label, each with its own noise. `rng` must not be a fresh
        generator with the gallery's seed: its noise would be the centres again, and
        face i of person j would resemble person i (a forget bench did this once)."""
        noise = rng.standard_normal((len(labels), self.centres.shape[1])).astype(np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        s = rng.uniform(0.5, 1.0, len(labels)).astype(np.float32)
        x = self.centres[labels] + noise * s[:, None]
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def gallery(n_ids: int, *, dim: int = DIM, sibling_fraction: float = 0.02, seed: int = 0) -> Gallery:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    siblings = {}
    n_sib = int(n_ids * sibling_fraction)
    for i in range(n_sib):
        a, b = i, n_ids - 1 - i
        if a >= b:
            break
        v = rng.standard_normal(dim).astype(np.float32)
        v -= (v @ centres[a]) * centres[a]
        v /= np.linalg.norm(v)
        centres[b] = 0.55 * centres[a] + np.sqrt(1 - 0.55**2) * v
        siblings[b] = a
    return Gallery(centres, siblings)


def photo_collection(n_faces: int, n_ids: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A photo collection: faces per person follow a long tail (a few people in
    many photos, many people in a few), every person at least twice."""
    rng = np.random.default_rng(seed)
    g = gallery(n_ids, seed=seed)
    weights = 1.0 / np.arange(1, n_ids + 1) ** 0.6
    extra = rng.choice(n_ids, size=n_faces - 2 * n_ids, p=weights / weights.sum())
    labels = np.concatenate([np.repeat(np.arange(n_ids), 2), extra])
    rng.shuffle(labels)
    return g.faces(labels, rng), labels
