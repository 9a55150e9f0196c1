"""A packed search answer (`SearchByEmbeddingResponse.packed`) as numpy arrays.

    answer = fb.search_embeddings(queries, top_k=10, packed=True)
    m = MatchArrays.from_pb(answer.packed)
    m.identity_ids[i, 0], m.scores[i, 0]   # query i's best match ("" / NaN: none)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facebank.v1 import facebank_pb2 as pb


@dataclass(frozen=True)
class MatchArrays:
    identity_ids: np.ndarray   # queries x top_k, str; "" where a query has fewer matches
    display_names: np.ndarray  # queries x top_k, str
    scores: np.ndarray         # queries x top_k, float32; NaN where no match
    face_counts: np.ndarray    # queries x top_k: how many of each match's faces `face_ids` holds
    face_ids: np.ndarray       # uint64, every match's faces, match after match (row-major), best first
    face_offsets: np.ndarray   # queries x top_k: where each match's faces start in `face_ids`

    @classmethod
    def from_pb(cls, packed: pb.PackedMatches) -> "MatchArrays":
        top_k = max(packed.top_k, 1)
        index = np.frombuffer(packed.identities_i32, "<i4").reshape(-1, top_k)
        ids = np.array([*packed.identity_ids, ""], dtype=object)  # index -1 picks the trailing ""
        names = np.array([*packed.display_names, ""], dtype=object)
        counts = np.frombuffer(packed.face_counts_u32, "<u4").reshape(-1, top_k)
        flat = counts.ravel().astype(np.int64)
        return cls(
            identity_ids=ids[index], display_names=names[index],
            scores=np.frombuffer(packed.scores_f32, "<f4").reshape(-1, top_k),
            face_counts=counts, face_ids=np.frombuffer(packed.face_ids_u64, "<u8"),
            face_offsets=(np.cumsum(flat) - flat).reshape(counts.shape),
        )

    def faces(self, query: int, rank: int = -1) -> np.ndarray:
        """The faces through which query `query`'s match at `rank` (0 = best) was
        found, best first; with no rank, those of all its matches, match after match."""
        if rank < 0:
            start = int(self.face_offsets[query, 0])
            return self.face_ids[start : start + int(self.face_counts[query].sum())]
        start = int(self.face_offsets[query, rank])
        return self.face_ids[start : start + int(self.face_counts[query, rank])]
