"""A two-stage pipeline over a request stream: items are read off the stream and
prepared in groups on one thread (the model's work), while the caller's thread
finishes them one by one (the catalog's work) and answers.

Neither stage waits for the stream: a group is whatever has arrived, up to
BULK_GROUP items, so a client that sends one item and waits for its answer gets
it at once. At most four groups of photos are held per stream (one read ahead,
one in the model, one waiting, one being written). If the caller stops (the
client went away), both threads end at their next step.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")

BULK_GROUP = 8   # items whose photos go through the model together (faces.GROUP photos a call)
_END = object()


def pipelined(items: Iterator[T], prepare: Callable[[list[T]], list], *, group: int = BULK_GROUP) -> Iterator[tuple[T, object]]:
    """(item, prepare's result for it) in the stream's order. `prepare` maps a group
    of items to one result each; an exception it raises becomes every item's result."""
    incoming: queue.Queue = queue.Queue(maxsize=group)
    ready: queue.Queue = queue.Queue(maxsize=1)
    stopped = threading.Event()

    def put(q: queue.Queue, value) -> bool:
        while not stopped.is_set():
            try:
                q.put(value, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put(incoming, item):
                    return
        except BaseException as err:  # the stream broke: answer what arrived, then end with it
            put(incoming, _Broken(err))
        put(incoming, _END)

    def work() -> None:
        done = False
        while not done and not stopped.is_set():
            try:
                first = incoming.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < group and not isinstance(batch[-1], _Broken) and batch[-1] is not _END:
                try:
                    batch.append(incoming.get_nowait())
                except queue.Empty:
                    break
            tail = [x for x in batch if x is _END or isinstance(x, _Broken)]
            batch = [x for x in batch if x is not _END and not isinstance(x, _Broken)]
            if batch:
                try:
                    results = prepare(batch)
                except Exception as err:  # noqa: BLE001  (handed to the caller, item by item)
                    results = [err] * len(batch)
                if not put(ready, list(zip(batch, results))):
                    return
            for marker in tail:
                put(ready, marker)
                done = True

    threads = [threading.Thread(target=read, name="facebank-bulk-read", daemon=True),
               threading.Thread(target=work, name="facebank-bulk-model", daemon=True)]
    for t in threads:
        t.start()
    try:
        while True:
            got = ready.get()
            if got is _END:
                return
            if isinstance(got, _Broken):
                raise got.error
            yield from got
    finally:
        stopped.set()


class _Broken:
    def __init__(self, error: BaseException) -> None:
        self.error = error
