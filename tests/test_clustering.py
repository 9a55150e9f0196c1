"""Clustering photo collections: on the real photos and on small synthetic sets."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from conftest import open_store, FACES, ServerProcess, assert_derived_tables_match, single_person_photos
from facebank.index import identities
from facebank.errors import FailedPrecondition
from facebank.index.cluster_job import Summary, run_pass
from facebank.index.clustering import ClusteringParams, cluster, knn, match_clusters
from facebank.index.records import IndexSettings
from facebank.index.sealed_faces import NewFace
from facebank.v1 import facebank_pb2 as pb

DIM = 64
PARAMS = ClusteringParams(edge_min=0.45)


def people(n_ids: int, per_id: int, seed: int = 0, noise: float = 0.55):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, DIM))
    labels = np.repeat(np.arange(n_ids), per_id)
    x = centres[labels] / np.sqrt(DIM) + noise / np.sqrt(DIM) * rng.standard_normal((len(labels), DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def run(store, cid, full=False) -> Summary:
    events = list(run_pass(store, cid, PARAMS, full=full))
    assert isinstance(events[-1], Summary)
    return events[-1]


def new_face(v, photo: str) -> NewFace:
    return NewFace([0, 0, 80, 80], [[20, 20]] * 5, 0.9, {"passed": True, "detection_score": 0.9, "face_size": 80, "sharpness": 200}, v, photo, photo, "m")


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "d")
    s.create_collection("photos", "m", DIM, 0.4, IndexSettings())
    yield s
    s.close()


def ingest(store, vectors, photo_of=lambda i: i, offset=0):
    ids = []
    for i, v in enumerate(vectors):
        records, _ = identities.ingest(store, "photos", f"{photo_of(i + offset):064x}", [new_face(v, f"{photo_of(i + offset):064x}")])
        ids.append(records[0].face_id)
    return ids


def clusters_of(store, cid=1) -> dict[int, set[int]]:
    with store.read() as t:
        return {c.cluster_id: set(t.cluster_face_ids(c.cluster_id)) for c in t.iter_clusters(cid)}


def test_clusters_are_pure_and_complete_on_identity_data(store):
    x, labels = people(30, 8)
    ids = ingest(store, x)
    summary = run(store, 1)
    label_of = dict(zip(ids, labels))
    found = clusters_of(store)
    assert summary.clusters == len(found) == 30
    for members in found.values():
        assert len({label_of[f] for f in members}) == 1  # pure
    assert sorted(len(m) for m in found.values()) == [8] * 30  # and complete


def test_faces_without_confident_neighbours_stay_unclustered(store):
    x, _ = people(5, 6)
    loners = np.random.default_rng(9).standard_normal((4, DIM)).astype(np.float32)
    loners /= np.linalg.norm(loners, axis=1, keepdims=True)
    ingest(store, np.concatenate([x, loners]))
    summary = run(store, 1)
    assert summary.clusters == 5 and summary.unclustered == 4
    with store.read() as t:
        assert len(t.unclustered_face_ids(1)) == 4


def test_two_faces_of_one_photo_are_never_in_one_cluster():
    x, _ = people(3, 6)
    twin = x[0] * 0.999 + 0.001 * x[1]  # near-identical faces, as a mirror or a twin would give
    twin /= np.linalg.norm(twin)
    vectors = np.concatenate([x, twin[None]])
    photos = np.arange(len(vectors))
    photos[-1] = photos[0]  # the twin is in the same photo as face 0
    sims, nbrs = knn(vectors, 10)
    labels, evicted = cluster(sims, nbrs, photos, np.ones(len(vectors)), PARAMS)
    assert labels[0] != labels[-1] or labels[0] < 0
    for label in set(labels.tolist()) - {-1}:
        members = np.nonzero(labels == label)[0]
        assert len(set(photos[members].tolist())) == len(members)


def test_siblings_are_kept_apart():
    rng = np.random.default_rng(4)
    a = rng.standard_normal(DIM)
    a /= np.linalg.norm(a)
    b = 0.55 * a + np.sqrt(1 - 0.55**2) * _orthogonal(a, rng)  # a sibling: centres at cosine 0.55
    faces, labels = [], []
    for who, centre in enumerate((a, b)):
        for _ in range(12):
            v = centre + 0.55 * rng.standard_normal(DIM) / np.sqrt(DIM)
            faces.append(v / np.linalg.norm(v))
            labels.append(who)
    vectors = np.asarray(faces, np.float32)
    sims, nbrs = knn(vectors, 10)
    out, _ = cluster(sims, nbrs, np.arange(len(vectors)), np.ones(len(vectors)), PARAMS)
    for label in set(out.tolist()) - {-1}:
        assert len({labels[i] for i in np.nonzero(out == label)[0]}) == 1


def _orthogonal(a, rng):
    v = rng.standard_normal(len(a))
    v -= (v @ a) * a
    return v / np.linalg.norm(v)


def test_new_photos_join_existing_clusters_without_reprocessing_settled_faces(store):
    x, labels = people(6, 10)
    first = [i for i in range(len(x)) if i % 10 < 7]
    later = [i for i in range(len(x)) if i % 10 >= 7]
    ingest(store, x[first])
    run(store, 1)
    before = clusters_of(store)
    ingest(store, x[later], offset=1000)
    events = list(run_pass(store, 1, PARAMS))
    summary = events[-1]
    assert ("assign", 0, len(later)) in events  # only the new faces were looked at
    assert summary.assigned == len(later) and summary.new_clusters == 0
    after = clusters_of(store)
    assert set(after) == set(before)
    for cid, members in before.items():
        assert members <= after[cid] and len(after[cid]) == 10


def test_full_recluster_keeps_ids_where_membership_agrees(store):
    x, _ = people(8, 6)
    ingest(store, x)
    run(store, 1)
    before = clusters_of(store)
    summary = run(store, 1, full=True)
    assert clusters_of(store) == before and summary.new_clusters == 0


def test_match_clusters_by_overlap():
    old = {10: {1, 2, 3, 4}, 20: {5, 6, 7}, 30: {8, 9}}
    new = {0: {1, 2, 3}, 1: {5, 6, 7, 11}, 2: {8, 12, 13, 14}}
    assert match_clusters(old, new) == {0: 10, 1: 20}


def test_edits_naming_and_names_surviving_reclustering(store):
    x, labels = people(4, 6)
    ids = ingest(store, x)
    run(store, 1)
    from facebank.index import cluster_store

    by_label = {labels[ids.index(next(iter(m)))]: cid for cid, m in clusters_of(store).items()}
    identity = cluster_store.name(store, 1, by_label[0], "alice", "Alice")
    assert identity.face_count == 6
    hits = store.search("photos", x[:1], 1)[0]
    assert hits[0].identity.external_id == "alice"  # named: enrolled, found by 1:N search
    split = cluster_store.split(store, 1, by_label[1], [ids[6], ids[7]])
    assert split.size == 2 and split.locked
    merged = cluster_store.merge(store, 1, by_label[1], [split.cluster_id])
    assert merged.size == 6
    run(store, 1, full=True)
    more = x[:6] + 0.01
    ingest(store, more / np.linalg.norm(more, axis=1, keepdims=True), offset=500)
    run(store, 1)
    rec, faces = identities.identity(store, "photos", "alice")
    assert rec.face_count == 12 and rec.display_name == "Alice"  # new photos joined the named cluster
    assert clusters_of(store)[rec.cluster_id] == {f.face_id for f in faces}
    assert_derived_tables_match(store)


def test_counts_and_named_clusters_are_rebuilt_for_a_catalog_without_them(tmp_path):
    """A catalog written before the derived tables existed (or by an older layout of
    them) gets them rebuilt from its records when opened, and they stay in step after."""
    store = open_store(tmp_path / "d")
    store.create_collection("photos", "m", DIM, 0.4, IndexSettings())
    x, labels = people(3, 5)
    ids = ingest(store, x)
    run(store, 1)
    from facebank.index import cluster_store

    first = next(c for c, m in clusters_of(store).items() if ids[0] in m)
    cluster_store.name(store, 1, first, "alice", "")
    counted = ("identities", "faces", "unassigned", "clusters")
    before = {k: store.stats(store.collection("photos"))[k] for k in counted}
    with store.write() as t:  # as an older version left it
        for table in ("counts", "identity_clusters"):
            t.txn.drop(t.db[table], delete=False)
        t.delete_meta("derived_version")
    assert store.stats(store.collection("photos"))["clusters"] == 0
    store.close()

    store = open_store(tmp_path / "d")
    assert {k: store.stats(store.collection("photos"))[k] for k in counted} == before
    assert before == {"identities": 1, "faces": 5, "unassigned": 10, "clusters": len(clusters_of(store))}  # naming enrolled 5
    assert_derived_tables_match(store)
    from facebank.index.forget import forget_identity

    forget_identity(store, store.maintenance, "photos", "alice")
    assert first not in clusters_of(store)
    assert_derived_tables_match(store)
    store.close()


def test_merging_two_faces_of_one_photo_is_refused(store):
    x, _ = people(2, 3)
    ingest(store, x)
    run(store, 1)
    (first, a), (second, b) = sorted(clusters_of(store).items())
    from facebank.index import cluster_store

    with store.write() as t:  # one face of each cluster now comes from the same photo
        fa, fb_ = t.get_face(min(a)), t.get_face(min(b))
        moved = type(fb_)(**{**vars(fb_), "image_sha256": fa.image_sha256})
        t.put_face(moved, fb_)
    with pytest.raises(FailedPrecondition, match="same photo"):
        cluster_store.merge(store, 1, first, [second])
    assert clusters_of(store) == {first: a, second: b}  # refused: nothing changed


def test_moving_faces_between_clusters_takes_the_target_identity(store):
    """MoveFaces: faces from any cluster (or none) join the target and its name; a cluster
    emptied by the move goes; a refused move (cannot-link, unknown face) changes nothing."""
    from facebank.errors import InvalidArgument, NotFound
    from facebank.index import cluster_store

    x, labels = people(3, 4)
    ids = ingest(store, x)
    run(store, 1)
    by_label = {labels[ids.index(next(iter(m)))]: cid for cid, m in clusters_of(store).items()}
    cluster_store.name(store, 1, by_label[0], "alice", "Alice")
    moved = cluster_store.move_faces(store, 1, by_label[0], [ids[4]])  # a face of person 1 into alice
    assert moved.size == 5 and moved.locked and ids[4] in clusters_of(store)[by_label[0]]
    rec, faces = identities.identity(store, "photos", "alice")
    assert rec.face_count == 5 and ids[4] in {f.face_id for f in faces}  # now one of alice's enrolled faces
    assert store.search("photos", x[4:5], 1)[0][0].identity.external_id == "alice"
    assert clusters_of(store)[by_label[1]] == set(ids[5:8])

    cluster_store.move_faces(store, 1, by_label[2], [ids[4]])  # and on, out of alice: enrolled no more
    assert identities.identity(store, "photos", "alice")[0].face_count == 4
    with store.read() as t:
        assert t.get_face(ids[4]).iid == 0 and t.get_face(ids[4]).cluster_id == by_label[2]
    cluster_store.move_faces(store, 1, by_label[2], ids[5:8])  # emptying person 1's cluster
    assert by_label[1] not in clusters_of(store) and len(clusters_of(store)[by_label[2]]) == 8

    before = clusters_of(store)
    with pytest.raises(NotFound):
        cluster_store.move_faces(store, 1, by_label[0], [ids[8], 999_999])
    with pytest.raises(NotFound):
        cluster_store.move_faces(store, 1, 424_242, [ids[8]])
    with pytest.raises(InvalidArgument):
        cluster_store.move_faces(store, 1, by_label[0], [])
    with store.write() as t:  # a face of alice's now shares a photo with one in the other cluster
        fa, fb_ = t.get_face(ids[0]), t.get_face(ids[8])
        t.put_face(type(fb_)(**{**vars(fb_), "image_sha256": fa.image_sha256}), fb_)
    with pytest.raises(FailedPrecondition, match="same photo"):
        cluster_store.move_faces(store, 1, by_label[0], [ids[8]])
    assert clusters_of(store) == before  # every refusal left the clusters as they were
    assert_derived_tables_match(store)


@pytest.fixture(scope="module")
def real_clusters(tmp_path_factory):
    root = tmp_path_factory.mktemp("clusters")
    server = ServerProcess(root / "data").start()
    try:
        out = server.cli("cluster", str(FACES), "--json", "--out", str(root / "sheet.html"))
        yield json.loads(out.stdout), root
    finally:
        server.stop()


def test_real_photos_every_identity_in_a_pure_cluster_of_its_own(real_clusters):
    result, _ = real_clusters
    import csv

    with open(FACES / "labels.csv") as f:
        label = {row["path"]: row["identity"] for row in csv.DictReader(f)}
    label["edge_cases/rgba_32bit.png"] = "obama"
    counts = Counter(row for row in label.values() if row)
    multi = {who for who, n in counts.items() if n >= 2}
    found: dict[str, list[int]] = {}
    for c in result["clusters"]:
        singles = {label[f["image"]] for f in c["faces"] if label.get(f["image"])}
        assert len(singles) <= 1, c  # pure (group photos are checked through their members)
        for who in singles:
            found.setdefault(who, []).append(c["id"])
    assert set(found) == multi
    assert all(len(ids) == 1 for ids in found.values())  # one cluster per person
    for c in result["clusters"]:
        images = [f["image"] for f in c["faces"]]
        assert len(images) == len(set(images))  # never two faces of one photo
    assert sum(len(c["faces"]) for c in result["clusters"]) + len(result["noise"]) == 40


def test_contact_sheet_is_written(real_clusters):
    result, root = real_clusters
    page = (root / "sheet.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("<section>") == len(result["clusters"]) + 1
    assert page.count("data:image/jpeg;base64,") == 40


def test_clustering_over_the_api_streams_progress(client):
    items = [pb.IngestItem(item_id=p.path.name, collection="default", image=pb.Image(data=p.data, source_ref=p.path.name))
             for who in ("obama", "kit_harington") for p in single_person_photos()[who]]
    results = list(client.ingest(items))
    assert all(len(r.faces) == 1 for r in results)
    again = list(client.ingest(items[:2]))
    assert all(r.already_ingested for r in again)
    progress = list(client.cluster())
    assert [p.stage for p in progress][:2] == ["assign", "assign"] and progress[-1].summary.clusters == 2
    listing = client.list_clusters(include_faces=True)
    assert sorted(c.size for c in listing.clusters) == [3, 11]
    biggest = listing.clusters[0]
    assert len(biggest.representatives) == 3 and set(biggest.representatives) <= {f.face_id for f in biggest.faces}
    named = client.name_cluster(biggest.cluster_id, "obama", display_name="Barack Obama")
    assert named.face_count == 11
    hit = client.search(single_person_photos()["obama"][0].path).faces[0].matches[0]
    assert hit.identity_id == "obama" and hit.display_name == "Barack Obama"
    assert client.get_cluster(biggest.cluster_id).identity_id == "obama"
