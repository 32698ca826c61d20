"""Process settings for CPU memory: torch's allocator on import of `model`, glibc's malloc at process start.

torch allocates every large CPU tensor with a fresh ``mmap``; the kernel then faults in and zeroes
each 4 KiB page on first touch, run after run. On the 2-core development VM that was half of an
eager 1024 px forward pass (798 ms, 2.1 M page faults; 386 ms and 0.17 M faults with huge pages).
``THP_MEM_ALLOC_ENABLE=1`` makes torch's CPU allocator align large blocks to 2 MiB and ask for
transparent huge pages (``madvise``), 512x fewer faults. It is read once, at torch's first
allocation, so it must be in the environment before ``import torch``; a value the user set wins.

onnxruntime allocates through glibc's malloc, which has the same cost when the onnx backend hands its
memory back after a large run (`model.onnx_backend`): a 1024 px run took ~300 ms with 4 KiB pages and
~220 ms with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (malloc asks for transparent huge pages).
glibc reads that only when the process starts, so the long-running commands (``cinstyle serve``,
``cinstyle worker``) and the benchmarks re-execute themselves once with it (`reexec_with_huge_page_malloc`).
A ``glibc.malloc.hugetlb`` value the user set wins (``=0`` turns this off).

The servers also cap glibc's malloc arenas (`limit_malloc_arenas`). Huge pages make a fault cheaper;
`large_blocks_reused` avoids it: while an image is stylized, glibc keeps
the large blocks a pass frees for the next pass instead of unmapping them (see there).
"""

import ctypes
import functools
import os
import platform
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

DEFAULTS = {"THP_MEM_ALLOC_ENABLE": "1"}
HUGE_PAGE_MALLOC = "glibc.malloc.hugetlb=1"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


# mallopt(3) parameters, and the thresholds glibc's own dynamic ones end at once a process has freed a large
# block (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit, and twice that for trimming): what `large_blocks_reused` puts back.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
REUSE_THRESHOLD = 1 << 30  # blocks up to this size come from (and go back to) malloc's heap while reusing
SETTLED_MMAP_THRESHOLD, SETTLED_TRIM_THRESHOLD = 32 << 20, 64 << 20

_reuse_lock = threading.Lock()
_reuse_users = 0


def apply_defaults() -> None:
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)


def huge_page_malloc_environ(environ: Mapping[str, str] = os.environ) -> dict[str, str] | None:
    """``environ`` with glibc's malloc asking for huge pages, or None where it already does (or the user chose),
    the C library is not glibc >= 2.35 (the first with the tunable), or the kernel has huge pages off."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables or not _glibc_has_hugetlb() or not _transparent_huge_pages_on():
        return None
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{HUGE_PAGE_MALLOC}" if tunables else HUGE_PAGE_MALLOC}


def reexec_with_huge_page_malloc() -> None:
    """Replace this process (same pid, same command line) by one whose malloc asks for huge pages; no-op
    where `huge_page_malloc_environ` says so. Call it first thing, before threads or files exist."""
    environ = huge_page_malloc_environ()
    if environ is None or not sys.executable or not sys.orig_argv:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, environ)


def _glibc_has_hugetlb() -> bool:
    libc, version = platform.libc_ver()
    try:
        return libc == "glibc" and tuple(int(part) for part in version.split(".")[:2]) >= (2, 35)
    except ValueError:
        return False


def _transparent_huge_pages_on() -> bool:
    try:
        with open(THP_SETTING) as setting:
            return "[never]" not in setting.read()
    except OSError:
        return False


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives every thread that allocates its own arena (up to 8 per core) and keeps what they free:
    with dozens of request threads the resident memory then grows with the number of clients, not the
    work. Two arenas keep it flat (the usual MALLOC_ARENA_MAX=2 for threaded Python servers). A no-op
    without glibc."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, arenas)


@contextmanager
def large_blocks_reused() -> Iterator[None]:
    """While inside (from any thread), glibc's malloc serves large blocks (up to 1 GiB) from its heap and keeps
    the ones that are freed for the next allocation, instead of a fresh ``mmap`` per block that the kernel must
    fault in and zero: eager torch allocates every layer's output anew, so each 1108 px tile of a 4096 px image
    faulted in about 1 GB (tiles ran at 200-700 ms/MP, 160-170 with this). When the last user leaves, the free
    memory goes back to the system (``malloc_trim``) and the thresholds settle where glibc's own dynamic ones
    end up. Worker threads' malloc heaps are capped at 64 MiB, so there blocks above that are still mapped
    afresh. A no-op without glibc."""
    global _reuse_users
    libc = _glibc()
    if libc is None:
        yield
        return
    with _reuse_lock:
        _reuse_users += 1
        if _reuse_users == 1:
            libc.mallopt(M_MMAP_THRESHOLD, REUSE_THRESHOLD)
            libc.mallopt(M_TRIM_THRESHOLD, REUSE_THRESHOLD)
    try:
        yield
    finally:
        with _reuse_lock:
            _reuse_users -= 1
            if _reuse_users == 0:
                libc.mallopt(M_MMAP_THRESHOLD, SETTLED_MMAP_THRESHOLD)
                libc.mallopt(M_TRIM_THRESHOLD, SETTLED_TRIM_THRESHOLD)
                libc.malloc_trim(0)


@functools.cache
def _glibc() -> "ctypes.CDLL | None":
    """The C library, for mallopt and malloc_trim; None where it is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.malloc_trim.argtypes = [ctypes.c_int, ctypes.c_int], [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc
