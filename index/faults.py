"""Fault injection for the crash tests: `FACEBANK_CRASH_AT=<step>` makes the process
SIGKILL itself at that named step (forget:after-intent, uow:after-commit, ...);
`FACEBANK_DELAY_AT=<step>=<seconds>` makes that step take so long (a rebuild of
millions of faces, in a test of seconds)."""

from __future__ import annotations

import os
import signal
import time

CRASH_ENV = "FACEBANK_CRASH_AT"
DELAY_ENV = "FACEBANK_DELAY_AT"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def delay_point(name: str, interrupt=None) -> None:
    """Sleep at this step if asked; `interrupt()` turning true ends the sleep early
    (the step is one that shutdown can leave)."""
    step, _, seconds = os.environ.get(DELAY_ENV, "").partition("=")
    if step != name:
        return
    until = time.monotonic() + float(seconds or 0)
    while time.monotonic() < until and not (interrupt and interrupt()):
        time.sleep(min(0.1, max(0.0, until - time.monotonic())))
