"""Walking photo folders and streaming them to the server with a progress bar.

Resuming is free: the server recognises an image it already stored (by its
SHA-256) and answers `already` without running the model again, so running
the same command twice only does the new work.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def files_under(root: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) below root, sorted; hidden files and folders skipped."""
    images, others = [], []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts):
            (images if p.suffix.lower() in IMAGE_SUFFIXES else others).append(p)
    return images, others


def images_under(root: Path) -> list[Path]:
    return files_under(root)[0]


def identity_folders(root: Path) -> tuple[list[tuple[str, Path]], list[Path]]:
    """(identity id, file) for images in root's sub-folders; and images directly in root."""
    pairs, loose = [], []
    for path in images_under(root):
        rel = path.relative_to(root)
        if len(rel.parts) < 2:
            loose.append(path)
        else:
            pairs.append((rel.parts[0], path))
    return pairs, loose


NOT_AN_IMAGE = f"not an image facebank reads ({', '.join(sorted(IMAGE_SUFFIXES))})"


def report_skip(console: Console, tally: "Tally", item: str, reason: str, message: str) -> None:
    """Count and print one skipped file: one line each, never wrapped (logs and pipes keep it whole)."""
    tally.fail(item, reason, message)
    console.print(f"[yellow]skipped[/] {item}: {message}", markup=True, highlight=False, soft_wrap=True)


@dataclass
class Tally:
    done: int = 0
    new: int = 0
    already: int = 0
    faces: int = 0
    rejected: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (item, reason, message)

    def fail(self, item: str, reason: str, message: str) -> None:
        self.rejected[reason or "ERROR"] += 1
        self.failures.append((item, reason or "ERROR", message))

    def as_dict(self) -> dict:
        return {
            "processed": self.done, "stored": self.new, "already": self.already, "faces": self.faces,
            "rejected": dict(self.rejected), "failures": [{"item": i, "reason": r, "message": m} for i, r, m in self.failures],
        }


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )


def stream_items(
    make_items: Callable[[], Iterator],
    call: Callable[[Iterator], Iterable],
    handle: Callable[[object], None],
    *,
    total: int,
    label: str,
    console: Console,
    workers: int = 1,
) -> None:
    """Send items over `workers` parallel streams; `handle` each answer on this thread."""
    items = make_items()
    lock = threading.Lock()
    answers: queue.Queue = queue.Queue(maxsize=256)

    def next_item():
        with lock:
            return next(items, None)

    def run_stream():
        def feed():
            while (item := next_item()) is not None:
                yield item
        try:
            for answer in call(feed()):
                answers.put(("answer", answer))
        except BaseException as err:  # handed to the main thread, which decides
            answers.put(("error", err))
        finally:
            answers.put(("end", None))

    threads = [threading.Thread(target=run_stream, daemon=True) for _ in range(max(1, workers))]
    for t in threads:
        t.start()
    finished, first_error = 0, None
    with progress_bar(console) as bar:
        task = bar.add_task(label, total=total, rate="")
        import time

        started = time.monotonic()
        while finished < len(threads):
            kind, value = answers.get()
            if kind == "end":
                finished += 1
            elif kind == "error":
                first_error = first_error or value
            else:
                handle(value)
                bar.advance(task)
                done = bar.tasks[0].completed
                bar.update(task, rate=f"{done / max(1e-9, time.monotonic() - started):.1f}/s")
    if first_error is not None:
        raise first_error
