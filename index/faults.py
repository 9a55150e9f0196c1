"""Fault injection for the crash tests: `FACEBANK_CRASH_AT=<step>` makes the process
SIGKILL itself at that named step (forget:after-intent, uow:after-commit, ...)."""

from __future__ import annotations

import os
import signal

CRASH_ENV = "FACEBANK_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
