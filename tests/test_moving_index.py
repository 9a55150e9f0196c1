"""A state machine over an index moving into a new IVF (index/moving_index.py): an exact
index from its tail, an IVF list by list, float vectors into 8-bit codes. Enrollments,
forgets and moves in any order; after each step the moving index answers as a brute
force over the live faces as each side stores them, and holds every face exactly once."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from conftest import SOAK
from facebank.index import flat_move
from facebank.index.factory import IndexFactory
from facebank.index.flat_move import MovingFlat
from facebank.index.ivf_retrain import MovingIvf
from facebank.index.vector_source import VectorSource
from facebank.index.top_k import exact_top_k
from facebank.index.vectors import FlatIndex, IvfIndex, SearchParams
from test_ivf_growth import unit_vectors

DIM = 16
POOL = unit_vectors(4000, DIM, seed=21)  # face i's vector is POOL[i]
PIECE = flat_move.PIECE


class MovingMachine(RuleBasedStateMachine):
    @initialize(case=st.sampled_from([("flat", "ivf"), ("flat", "ivf_sq8"), ("ivf", "ivf"), ("ivf", "ivf_sq8"), ("ivf_sq8", "ivf_sq8")]),
                n=st.integers(600, 1500), piece=st.sampled_from([37, 128, 1000]))
    def start(self, case, n, piece):
        flat_move.PIECE = piece
        ids = np.arange(n, dtype=np.int64)
        source = VectorSource.of(ids, POOL[:n])
        if case[0] == "flat":
            old = FlatIndex(DIM)
            old.add(ids, POOL[:n])
        else:
            old = IndexFactory("cpu").build(case[0], DIM, source)
        fresh, _ = IvfIndex.trained_empty(DIM, source, nprobe=1, family=case[1], seed=3)
        self.codec = fresh.index.sq if case[1] == "ivf_sq8" else None
        self.old_codec = old.index.sq if case[0] == "ivf_sq8" else None
        self.moving = MovingFlat(old, fresh) if case[0] == "flat" else MovingIvf(old, fresh)
        self.live = set(range(n))
        self.next_id = n
        self.planned, self.read = 0, set()

    def teardown(self):
        flat_move.PIECE = PIECE

    def stored(self, face: int) -> np.ndarray:
        """Face `face` as the side that holds it stores it."""
        v = POOL[face][None]
        in_new = self.moving._split(np.array([face]))[1].size == 1
        codec = self.codec if in_new else self.old_codec
        return v[0] if codec is None else codec.decode(codec.compute_codes(v))[0]

    @rule(count=st.integers(1, 60))
    def enroll(self, count):
        count = min(count, len(POOL) - self.next_id)
        if count:
            new_ids = np.arange(self.next_id, self.next_id + count, dtype=np.int64)
            self.moving.add(new_ids, POOL[new_ids])
            self.live.update(new_ids.tolist())
            self.next_id += count

    @rule(data=st.data())
    def forget(self, data):
        picks = data.draw(st.lists(st.integers(0, self.next_id + 5), max_size=40))
        present = len(set(picks) & self.live)
        assert self.moving.remove(np.array(picks, np.int64)) == present
        self.live -= set(picks)

    @precondition(lambda self: self.planned < self.moving.pieces and self.moving.left == self.moving.pieces)
    @rule()
    def plan(self):
        """The move's first pass, a piece at a time, forgets between: each piece read is the
        faces the old side still holds there, as stored; all pieces together, every one of them."""
        ids, vectors = self.moving.read_piece(self.planned)
        assert set(ids.tolist()) <= self.live and not self.moving._split(ids)[1].size
        assert np.allclose(vectors, np.array([self.stored(int(i)) for i in ids], np.float32).reshape(-1, DIM), atol=1e-5)
        self.moving.plan(self.planned, ids, self.moving.nearest(vectors))
        self.read.update(ids.tolist())
        self.planned += 1
        if self.planned == self.moving.pieces:
            old_side = set(self.moving._split(np.array(sorted(self.live), np.int64))[0].tolist())
            assert old_side <= self.read

    @precondition(lambda self: self.moving.left > 0)
    @rule(steps=st.integers(1, 4))
    def move(self, steps):
        for _ in range(min(steps, self.moving.left)):
            self.moving.move_next()

    @invariant()
    def answers_as_a_brute_force_over_the_live_faces(self):
        present = np.array(sorted(self.live), np.int64)
        ids = self.moving.ids()
        assert len(ids) == len(set(ids.tolist())) == len(self.moving) == len(present)  # each face held once
        assert np.array_equal(np.sort(ids), present)
        if not len(present):
            return
        vectors = np.array([self.stored(int(i)) for i in present], np.float32)
        queries = unit_vectors(3, DIM, seed=len(present))
        want_scores, want = exact_top_k(queries, vectors, present, 3)
        got_scores, got = self.moving.search(queries, 3, SearchParams(nprobe=self.moving.nlist))
        assert np.allclose(got_scores, want_scores, atol=1e-4)
        subset = np.concatenate([present[::5], [self.next_id + 100]])   # a filter, and a face that is nowhere
        keep = np.isin(present, subset)
        want_scores, want = exact_top_k(queries, vectors[keep], present[keep], 3)
        got_scores, got = self.moving.search_subset(queries, 3, subset)
        assert np.allclose(got_scores, want_scores, atol=1e-4)
        back_ids, back = self.moving.reconstruct(present[::7])
        order = np.argsort(back_ids)
        assert np.array_equal(back_ids[order], present[::7]) and np.allclose(back[order], vectors[::7], atol=1e-5)


TestMovingMachine = MovingMachine.TestCase
TestMovingMachine.settings = settings(max_examples=20 * SOAK, stateful_step_count=25, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
