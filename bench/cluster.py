"""Clustering quality, speed and memory, side by side: facebank (the map equation,
NetworKit's LouvainMapEquation, on a FAISS kNN graph, cannot-link) against the approaches its peers use on the same graph:
kNN-DBSCAN as in Immich (3 neighbours within cosine distance 0.5) and plain
connected components of the thresholded graph. Pairwise F, BCubed F and NMI
against the labels, on a synthetic photo collection and on the real photos."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.synthetic import photo_collection

PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "faces"


def pairwise_f(truth, pred) -> float:
    def pairs(counter):
        return sum(v * (v - 1) // 2 for v in counter.values())

    tp, pp, tt = pairs(Counter(zip(truth, pred))), pairs(Counter(pred)), pairs(Counter(truth))
    p, r = (tp / pp if pp else 0.0), (tp / tt if tt else 0.0)
    return 2 * p * r / (p + r) if p + r else 0.0


def bcubed_f(truth, pred) -> float:
    joint, ct, cp = Counter(zip(truth, pred)), Counter(truth), Counter(pred)
    p = sum(v * v / cp[b] for (a, b), v in joint.items()) / len(truth)
    r = sum(v * v / ct[a] for (a, b), v in joint.items()) / len(truth)
    return 2 * p * r / (p + r)


def scores(truth: np.ndarray, labels: np.ndarray) -> dict:
    """Unclustered faces count as singletons (as a person sees them)."""
    from sklearn.metrics import normalized_mutual_info_score

    pred = labels.copy()
    lone = pred < 0
    pred[lone] = np.arange(lone.sum()) + pred.max(initial=0) + 1
    t, p = truth.tolist(), pred.tolist()
    return {"pairwise_f": round(pairwise_f(t, p), 4), "bcubed_f": round(bcubed_f(t, p), 4),
            "nmi": round(float(normalized_mutual_info_score(t, p)), 4), "clusters": int(labels.max(initial=-1) + 1), "unclustered": int(lone.sum())}


def dbscan_on_graph(sims, nbrs, eps: float = 0.5, min_samples: int = 3) -> np.ndarray:
    """Immich's rule: a core face has min_samples neighbours within cosine distance eps."""
    from scipy.sparse import csr_matrix
    from sklearn.cluster import DBSCAN

    n = len(sims)
    rows = np.repeat(np.arange(n), sims.shape[1])
    dist = np.clip(1.0 - sims.reshape(-1), 1e-9, None)
    keep = (nbrs.reshape(-1) >= 0) & (dist <= eps)
    graph = csr_matrix((dist[keep], (rows[keep], nbrs.reshape(-1)[keep])), shape=(n, n))
    graph = graph.maximum(graph.T)
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(graph)


def components_on_graph(sims, nbrs, edge_min: float) -> np.ndarray:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(sims)
    rows = np.repeat(np.arange(n), sims.shape[1])
    keep = (nbrs.reshape(-1) >= 0) & (sims.reshape(-1) >= edge_min)
    graph = csr_matrix((np.ones(keep.sum()), (rows[keep], nbrs.reshape(-1)[keep])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    labels[sizes[labels] < 2] = -1
    return labels


SIZES: list[int] = []  # faces per synthetic collection; set by --cluster-sizes (default 100,000; 10,000 with --quick)


class PeakRss:
    """The process's resident memory, sampled every 0.2 s while a block runs (the peak of
    that block, which ru_maxrss cannot give after an earlier, larger step)."""

    def __enter__(self) -> "PeakRss":
        import threading

        import psutil

        self.peak, self._stop = 0, threading.Event()
        process = psutil.Process()

        def sample() -> None:
            while not self._stop.is_set():
                self.peak = max(self.peak, process.memory_info().rss)
                self._stop.wait(0.2)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run(quick: bool, log=print) -> dict:
    from facebank.server.clusters import clustering_params
    from facebank.server.config import DEFAULT_THRESHOLD

    params = clustering_params(DEFAULT_THRESHOLD)
    rows = []
    for n_faces in SIZES or ([10_000] if quick else [100_000]):
        rows += one_size(n_faces, params, log)
    return {"clustering": rows, "clustering_real": real_photos(params)}


def one_size(n_faces: int, params, log) -> list[dict]:
    """facebank and its peers on one synthetic collection (20 faces a person on average)."""
    from facebank.index.clustering import cluster, knn

    n_ids = n_faces // 20
    x, truth = photo_collection(n_faces, n_ids, seed=3)
    with PeakRss() as graph_mem:
        t0 = time.perf_counter()
        sims, nbrs = knn(x, params.k)
        graph_s = time.perf_counter() - t0
    photos = np.arange(len(x))  # one face per photo here; cannot-link is tested on real photos
    with PeakRss() as cluster_mem:
        t0 = time.perf_counter()
        labels, _ = cluster(sims, nbrs, photos, np.ones(len(x)), params)
        cluster_s = time.perf_counter() - t0
    rows = [{"system": "facebank (map equation, NetworKit)", "faces": n_faces, "identities": n_ids, "graph_s": round(graph_s, 2),
             "cluster_s": round(cluster_s, 2), "total_s": round(graph_s + cluster_s, 2), **scores(truth, labels),
             "peak_rss_gb": round(max(graph_mem.peak, cluster_mem.peak) / 2**30, 2)}]
    log(f"cluster: facebank {rows[-1]['bcubed_f']} BCubed F in {rows[-1]['total_s']} s at {n_faces:,} faces")
    for name, fn in (("kNN-DBSCAN (Immich rule)", lambda: dbscan_on_graph(sims, nbrs)),
                     ("connected components", lambda: components_on_graph(sims, nbrs, params.edge_min))):
        with PeakRss() as mem:
            t0 = time.perf_counter()
            peer = fn()
            elapsed = time.perf_counter() - t0
        rows.append({"system": name, "faces": n_faces, "identities": n_ids, "graph_s": round(graph_s, 2), "cluster_s": round(elapsed, 2),
                     "total_s": round(graph_s + elapsed, 2), **scores(truth, peer), "peak_rss_gb": round(max(graph_mem.peak, mem.peak) / 2**30, 2)})
        log(f"cluster: {name} {rows[-1]['bcubed_f']} BCubed F")
    return rows  # the graph goes with this frame, before the next size


def real_photos(params) -> dict:
    """The real photos, clustered as `facebank cluster` does: per-photo cannot-link."""
    import csv

    from facebank.embedder import OnnxFaceEmbedder, decode_image, default_model_spec
    from facebank.index.clustering import cluster, knn

    shared = Path(__file__).resolve().parent.parent.parent / "shared" / "faces"
    root = shared if (shared / "labels.csv").exists() else PHOTOS
    embedder = OnnxFaceEmbedder(default_model_spec(), device="cpu")
    with open(root / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    vectors, photo, who = [], [], []
    for i, row in enumerate(rows):
        faces = embedder.analyze([decode_image((root / row["path"]).read_bytes())])[0]
        for face in faces:
            vectors.append(face.embedding)
            photo.append(i)
            identity = row["identity"] or ("obama" if row["path"] == "edge_cases/rgba_32bit.png" else "")
            who.append(identity if len(faces) == 1 else "")
    x = np.asarray(vectors)
    sims, nbrs = knn(x, params.k)
    labels, evicted = cluster(sims, nbrs, np.asarray(photo), np.ones(len(x)), params)
    by_identity: dict[str, set[int]] = {}
    impure = 0
    for label in set(labels.tolist()) - {-1}:
        names = {who[i] for i in np.nonzero(labels == label)[0] if who[i]}
        impure += len(names) > 1
        for name in names:
            by_identity.setdefault(name, set()).add(label)
    counts = Counter(w for w in who if w)
    multi = sorted(n for n, c in counts.items() if c >= 2)
    same_photo = sum(len(set(np.asarray(photo)[labels == lab])) != int((labels == lab).sum()) for lab in set(labels.tolist()) - {-1})
    return {
        "photos_root": str(root), "faces": len(x), "clusters": int(labels.max() + 1), "unclustered": int((labels < 0).sum()),
        "impure_clusters": impure, "clusters_holding_two_faces_of_one_photo": same_photo, "cannot_link_evictions": evicted,
        "identities_with_2plus_faces": len(multi),
        "identities_in_exactly_one_cluster": sum(len(by_identity.get(n, ())) == 1 for n in multi),
    }
