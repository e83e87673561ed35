"""Allocator tuning for argon2: keep hash memory mapped between hashes.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
mmap and unmaps it on free, so each verify at m=46 MiB maps a new block and takes about
12,000 minor page faults; measured here that is a fifth of a verify's CPU (README,
"Performance"). With mmap off for allocations and a high trim threshold, the blocks come
from the heap and stay mapped for the next hash. RSS then stays at its peak, which the
hashing pool bounds (pool size x argon2 memory).
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_KEEP = 1 << 30  # never give heap memory back below 1 GiB of free top


def keep_hash_memory_mapped() -> bool:
    """Apply the glibc settings to this process; False where there is no glibc mallopt."""
    if not sys.platform.startswith("linux"):
        return False
    # The C library the interpreter already runs on, from the process's own symbols
    # (dlopen(NULL)), not found by name: ctypes.util.find_library asks ldconfig or a
    # compiler, which a runtime image without a shell or toolchain does not have.
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # musl has none
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _KEEP) == 1)
