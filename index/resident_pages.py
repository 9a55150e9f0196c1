"""Handing memory back to the kernel: the pages of a file this process maps
read-only, and the heap a replaced index leaves free (Linux).

LMDB reads through a read-only shared mapping of the catalog file. A rebuild
reads every embedding once (about 2 GB at 1M faces), and each page it touched
stays in the process's resident set long after: clean pages the kernel would
reclaim under pressure, but RSS (what an operator's monitor and a container's
limit see) stays gigabytes above a start that read a snapshot. MADV_DONTNEED
on such a mapping only unmaps the pages from this process: they stay in the
page cache, and the next read faults them back in from there, unchanged. It is
never applied to a writable mapping (LMDB's writemap is not used here).

A replaced index frees gigabytes of inverted lists, medium-sized blocks that
glibc keeps in its arenas: measured at 1M faces, 2 GB freed after a retrain
stayed resident until the process ended in one run and went within seconds in
another. `trim_heap` (malloc_trim) returns such free pages at once.

Writes leave free memory in the arenas too: enrolling 10,000 faces into an
IVF frees about 90 MB of temporaries (the write's pages, the vectors, a list's
old buffer when it grows), and glibc reuses such holes only in part. Loaded
with the upkeep's rebuilds as a server does, 400,000 faces left 0.43 GB free
in the arenas (the process at 1.5 GB anonymous against 1.0 GB started from
its snapshot), and the 10M load 3.6 GB; the upkeep trims after writes
(maintenance.py). What glibc reports free (mallinfo2) cannot tell when: trimmed
holes stay free chunks to it, and a write that reuses one and frees it again
leaves it resident with the count unchanged.

py-lmdb does not say where the map is, so it is found in /proc/self/maps by
the file's path; the caller keeps the environment from being closed or
reopened meanwhile (an address freed and reused would be someone else's).
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from pathlib import Path

_ADVICE = getattr(mmap, "MADV_DONTNEED", None)


def release_mapped(path: Path) -> int:
    """Unmap this process's resident pages of `path`'s read-only shared mappings;
    returns the bytes of mapping advised (0 where this is not Linux or none is mapped)."""
    if _ADVICE is None or not sys.platform.startswith("linux"):
        return 0
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return 0
    target, advised = str(Path(path).resolve()), 0
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[5] != target or fields[1] != "r--s":
            continue
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if _libc().madvise(ctypes.c_void_p(low), ctypes.c_size_t(high - low), _ADVICE) == 0:
            advised += high - low
    return advised


def trim_heap() -> bool:
    """Return the allocator's free pages to the kernel (glibc's malloc_trim); False where there is none."""
    if not sys.platform.startswith("linux") or not hasattr(_libc(), "malloc_trim"):
        return False
    return bool(_libc().malloc_trim(0))


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
        _LIBC.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return _LIBC


_LIBC: ctypes.CDLL | None = None


def release_unused(address: int, length: int) -> int:
    """Hand back to the kernel the whole pages of [address, address + length): memory of this
    process's own (a buffer's room past its size) that nothing reads again before writing it;
    a page touched there again comes back zeroed. Returns the bytes advised."""
    if _ADVICE is None or not sys.platform.startswith("linux") or length <= 0:
        return 0
    page = mmap.PAGESIZE
    low, high = -(-address // page) * page, (address + length) // page * page
    if high <= low or _libc().madvise(ctypes.c_void_p(low), ctypes.c_size_t(high - low), _ADVICE) != 0:
        return 0
    return high - low


def zero_past_size(data, size: int, room: int) -> None:
    """Zero bytes [size, room) of the FAISS buffer at `data` (a SWIG pointer), which held `room`
    bytes before a removal shrank it to `size`. FAISS moves the faces after a removed one down
    (exact) or the last face of a list into its place (IVF) and shrinks the std::vector, which
    keeps its allocation and what it held: a removed face that was last stayed there, in the
    live process, until that room was written again. (HNSW zeroes a removed vector in place.)"""
    if room > size and data is not None:
        import faiss

        faiss.rev_swig_ptr(data, room)[size:] = 0
