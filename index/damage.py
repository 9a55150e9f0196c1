"""Damaged catalog records met while serving: named once in the log, counted,
and listed by `facebank check`. A damaged record is left out of what is
served (never read as something else), and the rest keeps working."""

from __future__ import annotations

import logging
import threading

from facebank.index.catalog_tables import describe_key

log = logging.getLogger(__name__)


class DamageReport:
    def __init__(self) -> None:
        self._seen: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()

    def add(self, rows) -> None:
        for table, key in rows or ():
            with self._lock:
                if (table, key) in self._seen:
                    continue
                self._seen.add((table, key))
            log.error("catalog record %s/%s is damaged and left out; run `facebank check`", table, describe_key(table, key))

    def __len__(self) -> int:
        return len(self._seen)

    def rows(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return sorted(self._seen)

    def forget(self, rows) -> None:
        """Rows set aside (quarantined) or repaired: no longer reported."""
        with self._lock:
            self._seen.difference_update(rows)
