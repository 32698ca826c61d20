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
"""

import os
import platform
import sys
from collections.abc import Mapping

DEFAULTS = {"THP_MEM_ALLOC_ENABLE": "1"}
HUGE_PAGE_MALLOC = "glibc.malloc.hugetlb=1"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


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
