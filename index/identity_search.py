"""1:N search at the identity level: face hits from a vector index, grouped
into identities (an identity scores its best face), with an optional metadata
filter applied inside the index. The answer stays in arrays (`IdentityMatches`):
a batch of 64 queries has 640 matches, and a Python object per match costs more
than the vector search.

Hits are checked against the FaceOwners view, which a commit updates at once:
a face removed (forgotten, deleted, moved) is dropped from every answer from
its commit on, even while its vector is still in the index, and once more just
before the answer leaves, for searches that were in flight during the commit.
A damaged identity record is left out, never served."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, NamedTuple

import numpy as np

from facebank.index.records import IdentityRecord
from facebank.index.segments import Segment
from facebank.index.face_owners import FaceOwners


class Hit(NamedTuple):
    identity: IdentityRecord
    score: float
    face_ids: list[int]


@dataclass(frozen=True)
class IdentityMatches:
    """A batch's answer as queries x top_k cells, best first in a row: query i
    matches identity `iid[i, j]` (0: no match) with `score[i, j]` (its best face;
    NaN: none) through `face_count[i, j]` of its faces; `face_ids` holds every
    cell's faces, cell after cell in row-major order, best first. `records` has
    every matched identity's record. Indexing a row gives its `Hit`s."""

    iid: np.ndarray
    score: np.ndarray
    face_count: np.ndarray
    face_ids: np.ndarray
    records: dict[int, IdentityRecord]

    def __len__(self) -> int:
        return len(self.iid)

    @cached_property
    def row_offset(self) -> np.ndarray:
        """Where each query's faces start in `face_ids`."""
        per_row = self.face_count.sum(axis=1)
        return np.cumsum(per_row) - per_row

    def __getitem__(self, row: int) -> list[Hit]:
        row = range(len(self))[row]  # negative rows count from the end; IndexError past it
        n = int(np.count_nonzero(self.iid[row]))
        first = int(self.row_offset[row])
        hits = []
        for iid, score, count in zip(self.iid[row, :n].tolist(), self.score[row, :n].tolist(), self.face_count[row, :n].tolist()):
            hits.append(Hit(self.records[iid], score, self.face_ids[first : first + count].tolist()))
            first += count
        return hits

    def __iter__(self):
        return (self[row] for row in range(len(self)))


@dataclass(frozen=True)
class SearchParts:
    """What a search reads, handed in by the store: the collection's enrolled segment,
    the owners view, identity records by iid (damaged ones left out), and what
    restricts a filtered search, passed to `segment.search` as `allowed`: the faces of
    the identities matching the metadata filter, or, on a search node (milvus_node.py),
    the filter as a Milvus expression that its segment hands to Milvus."""

    segment: Segment
    owners: FaceOwners
    records: Callable[[set[int]], dict[int, IdentityRecord]]
    filter_faces: Callable[[dict[str, str]], "np.ndarray | str"]


def search_identities(parts: SearchParts, queries: np.ndarray, top_k: int, metadata_filter: dict[str, str] | None,
                      min_score: float) -> IdentityMatches:
    segment = parts.segment
    allowed = parts.filter_faces(metadata_filter) if metadata_filter else None
    rounds: list[tuple[np.ndarray, GroupedHits]] = []
    records: dict[int, IdentityRecord] = {}
    todo = np.arange(len(queries)) if allowed is None or len(allowed) else np.zeros(0, np.int64)
    k = max(40, 4 * top_k)  # room for an identity's several faces; grown below if not enough
    while len(todo):
        scores, labels = segment.search(queries[todo], k, allowed)
        g = _alive(group_faces(scores, labels, parts.owners.lookup(labels), top_k, min_score), parts, records)
        rounds.append((todo, g))
        # An identity with many faces can crowd the others out of the k nearest:
        # look further for those queries only.
        if k >= 1024 or k >= len(segment.index):
            break
        short = (np.bincount(g.row, minlength=len(todo)) < top_k) & g.full & ~g.low
        todo, k = todo[short], k * 4
    rounds = [(todo, _drop_removed(g, parts.owners)) for todo, g in rounds]  # the last look, just before answering
    return _assemble(len(queries), top_k, rounds, records)


def _drop_removed(g: "GroupedHits", owners) -> "GroupedHits":
    """Faces whose owner changed since the grouping (a commit in between) leave the
    answer; an identity whose best face left goes with it (its score was that face's)."""
    if len(g.faces) == 0:
        return g
    lengths = g.end - g.start
    expected = np.repeat(g.iid, lengths)
    members = np.repeat(g.start - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))  # every kept group's faces
    still = owners.lookup(g.faces[members]) == expected
    if still.all():
        return g
    keep_face = np.zeros(len(g.faces), bool)
    keep_face[members[still]] = True
    keep = keep_face[g.start]
    position = np.concatenate([[0], np.cumsum(keep_face)])
    return g._replace(row=g.row[keep], iid=g.iid[keep], score=g.score[keep], start=position[g.start[keep]],
                      end=position[g.end[keep]], faces=g.faces[keep_face])


def _alive(g: "GroupedHits", parts: SearchParts, records: dict[int, IdentityRecord]) -> "GroupedHits":
    """Read the records of g's identities into `records`, dropping the identities
    forgotten since the vector search (they have none any more)."""
    new = set(g.iid.tolist()) - records.keys()
    if new:
        records.update(parts.records(new))
    if not new - records.keys():
        return g
    keep = np.fromiter((iid in records for iid in g.iid.tolist()), bool, len(g.iid))
    return g._replace(row=g.row[keep], iid=g.iid[keep], score=g.score[keep], start=g.start[keep], end=g.end[keep])


def _assemble(nq: int, top_k: int, rounds: list[tuple[np.ndarray, "GroupedHits"]], records: dict[int, IdentityRecord]) -> IdentityMatches:
    """One answer from the search rounds: each query's from the last round that searched it."""
    last = np.zeros(nq, np.int64)
    for r, (todo, _) in enumerate(rounds):
        last[todo] = r
    parts, faces, base = [], [], 0
    for r, (todo, g) in enumerate(rounds):
        row = todo[g.row]
        keep = last[row] == r
        parts.append((row[keep], g.iid[keep], g.score[keep], g.start[keep] + base, g.end[keep] + base))
        faces.append(g.faces)
        base += len(g.faces)
    empty = np.zeros(0, np.int64)
    row, iid, score, start, end = (np.concatenate(a) for a in zip(*parts)) if parts else (empty,) * 5
    order = np.argsort(row, kind="stable")  # rounds answer disjoint rows, each in rank order
    row, iid, score, start, end = row[order], iid[order], score[order], start[order], end[order]
    col = np.arange(len(row)) - np.searchsorted(row, row, side="left")
    count = end - start
    out_iid = np.zeros((nq, top_k), np.int64)
    out_score = np.full((nq, top_k), np.nan, np.float32)
    out_count = np.zeros((nq, top_k), np.int64)
    out_iid[row, col], out_score[row, col], out_count[row, col] = iid, score, count
    # every cell's faces in row-major cell order, which the sorted cells already follow
    gather = np.repeat(start - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
    all_faces = np.concatenate(faces) if faces else empty
    return IdentityMatches(out_iid, out_score, out_count, all_faces[gather], records)


class GroupedHits(NamedTuple):
    """Identity hits of a batch, by query row and best first within a row:
    identity `iid[i]` answers query `row[i]` with `score[i]` (its best face) and
    its faces among the hits are `faces[start[i]:end[i]]`, best first."""

    row: np.ndarray
    iid: np.ndarray
    score: np.ndarray
    start: np.ndarray
    end: np.ndarray
    faces: np.ndarray
    full: np.ndarray  # per query: every hit slot held a face
    low: np.ndarray   # per query: some hit was cut by min_score


def group_faces(scores: np.ndarray, labels: np.ndarray, owners: np.ndarray, top_k: int, min_score: float) -> GroupedHits:
    """An identity scores its best face; the best top_k identities per query are
    kept. Face hits come best first in each row (as every index returns them);
    label -1 is an empty slot, owner <= 0 a face no identity owns. Whole-batch
    array work: a Python loop over every face hit cost more than the search."""
    nq = len(labels)
    taken = labels >= 0
    valid = taken & (owners > 0) & (scores >= min_score)
    rows, cols = np.nonzero(valid)  # by query, then rank
    own = owners[rows, cols]
    order = np.argsort(rows * (int(own.max(initial=0)) + 1) + own, kind="stable")  # by query, then identity, then rank
    rows, own, cols = rows[order], own[order], cols[order]
    first = np.ones(len(rows), bool)
    first[1:] = (rows[1:] != rows[:-1]) | (own[1:] != own[:-1])
    starts = np.flatnonzero(first)  # one per (query, identity); its first face is its best
    ends = np.append(starts[1:], len(rows)).astype(np.int64)
    g_row, g_col = rows[starts], cols[starts]
    ranked = np.argsort(g_row * labels.shape[1] + g_col)  # identities of each query, best first
    ranked_rows = g_row[ranked]
    rank = np.arange(len(ranked)) - np.searchsorted(ranked_rows, ranked_rows, side="left")
    keep = ranked[rank < top_k]
    return GroupedHits(
        row=g_row[keep], iid=own[starts[keep]], score=scores[g_row[keep], g_col[keep]], start=starts[keep], end=ends[keep],
        faces=labels[rows, cols],
        full=taken[:, -1] if labels.shape[1] else np.zeros(nq, bool),
        low=(taken & (scores < min_score)).any(axis=1),
    )
