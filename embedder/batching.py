"""Dynamic micro-batching: concurrent callers share one model call.

`BatchingModel` wraps an `InferenceModel`. Each `run(batch)` is queued; one
worker thread takes the first waiting batch, waits at most `max_wait_ms` for
more (up to `max_batch` rows in all), runs them as one call and hands each
caller its rows. On a GPU this turns many small requests into a few large
kernels; the queue is bounded, and a full queue answers RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from facebank.errors import ResourceExhausted, Reason, Unavailable
from facebank.embedder.runtime import InferenceModel


class BatchingModel(InferenceModel):
    def __init__(self, model: InferenceModel, *, max_batch: int = 64, max_wait_ms: float = 2.0, max_queue: int = 1024) -> None:
        self.model = model
        self.device = model.device
        self.backend = f"{model.backend}+batching"
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._queue: queue.Queue[tuple[np.ndarray, Future] | None] = queue.Queue(maxsize=max_queue)
        self._closed = False
        self._accepting = threading.Lock()
        self._worker = threading.Thread(target=self._serve, name="facebank-microbatch", daemon=True)
        self._worker.start()
        self.calls = 0  # model calls made, for tests and benchmarks

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        future: Future = Future()
        with self._accepting:  # nothing is queued behind the close marker, where no one would answer it
            if self._closed:
                raise Unavailable("the model is shutting down; retry on another server")
            try:
                self._queue.put_nowait((batch, future))
            except queue.Full:
                raise ResourceExhausted("the face model queue is full; retry shortly", reason=Reason.OVERLOADED) from None
        return future.result()

    def close(self) -> None:
        """Refuse new calls; the ones already queued are still run and answered."""
        with self._accepting:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        self._worker.join(timeout=5)

    def _serve(self) -> None:
        pending: tuple[np.ndarray, Future] | None = None
        while True:
            first = pending or self._queue.get()
            pending = None
            if first is None:
                return
            group = [first]
            rows = len(first[0])
            deadline = time.monotonic() + self.max_wait
            while rows < self.max_batch:
                timeout = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                if rows + len(item[0]) > self.max_batch or item[0].shape[1:] != first[0].shape[1:]:
                    pending = item  # starts the next group
                    break
                group.append(item)
                rows += len(item[0])
            self._run_group(group)

    def _run_group(self, group: list[tuple[np.ndarray, Future]]) -> None:
        try:
            merged = group[0][0] if len(group) == 1 else np.concatenate([g[0] for g in group])
            outputs = self.model.run(merged)
            self.calls += 1
        except BaseException as err:  # handed to every caller, never lost in this thread
            for _, future in group:
                future.set_exception(err)
            return
        offset = 0
        for batch, future in group:
            n = len(batch)
            future.set_result([o[offset : offset + n] for o in outputs])
            offset += n
