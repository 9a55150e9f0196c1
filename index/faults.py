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


def delay_point(name: str) -> None:
    step, _, seconds = os.environ.get(DELAY_ENV, "").partition("=")
    if step == name:
        time.sleep(float(seconds or 0))
