"""Process memory settings: glibc's malloc asks for huge pages in the long-running commands."""

import json
import platform
import subprocess
import sys

import pytest

from model import cpu_memory


@pytest.fixture
def glibc_with_huge_pages(monkeypatch):
    monkeypatch.setattr(cpu_memory, "_glibc_has_hugetlb", lambda: True)
    monkeypatch.setattr(cpu_memory, "_transparent_huge_pages_on", lambda: True)


def test_the_tunable_is_added_and_other_tunables_are_kept(glibc_with_huge_pages):
    assert cpu_memory.huge_page_malloc_environ({"PATH": "/bin"}) == {
        "PATH": "/bin",
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
    }
    environ = cpu_memory.huge_page_malloc_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert environ == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"}


def test_a_value_the_user_chose_wins_and_a_second_start_changes_nothing(glibc_with_huge_pages):
    assert cpu_memory.huge_page_malloc_environ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
    once = cpu_memory.huge_page_malloc_environ({})
    assert cpu_memory.huge_page_malloc_environ(once) is None  # so the re-executed process does not loop


def test_nothing_changes_without_glibc_2_35_or_with_huge_pages_off(monkeypatch):
    monkeypatch.setattr(cpu_memory.platform, "libc_ver", lambda: ("glibc", "2.31"))
    assert cpu_memory.huge_page_malloc_environ({}) is None
    monkeypatch.setattr(cpu_memory.platform, "libc_ver", lambda: ("", ""))
    assert cpu_memory.huge_page_malloc_environ({}) is None
    monkeypatch.setattr(cpu_memory.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(cpu_memory, "THP_SETTING", "/nonexistent/transparent_hugepage/enabled")
    assert cpu_memory.huge_page_malloc_environ({}) is None


def test_huge_pages_off_in_the_kernel_setting_is_respected(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_memory.platform, "libc_ver", lambda: ("glibc", "2.36"))
    setting = tmp_path / "enabled"
    monkeypatch.setattr(cpu_memory, "THP_SETTING", str(setting))
    setting.write_text("always madvise [never]\n")
    assert cpu_memory.huge_page_malloc_environ({}) is None
    setting.write_text("always [madvise] never\n")
    assert cpu_memory.huge_page_malloc_environ({}) == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


REUSE_PROBE = """
import json, sys
import numpy as np
from model import cpu_memory

def rss_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

block = 200 * 2**20
start = rss_mb()
a = np.ones(block, dtype=np.uint8); del a
before = rss_mb()  # glibc's default: a block this large is unmapped when freed
with cpu_memory.large_blocks_reused():
    with cpu_memory.large_blocks_reused():  # a second user (e.g. another request's thread)
        a = np.ones(block, dtype=np.uint8); del a
    inner_left = rss_mb()  # the other user is still inside: the freed block is kept for reuse
    a = np.ones(block, dtype=np.uint8); del a
    kept = rss_mb()
    users = cpu_memory._reuse_users
after = rss_mb()  # the last user left: handed back
print(json.dumps({"start": start, "before": before, "inner_left": inner_left, "kept": kept, "after": after,
                  "users_inside": users, "users_after": cpu_memory._reuse_users}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_large_blocks_are_kept_for_reuse_while_inside_and_handed_back_when_the_last_user_leaves():
    result = subprocess.run([sys.executable, "-c", REUSE_PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rss = json.loads(result.stdout.strip().splitlines()[-1])
    assert rss["before"] - rss["start"] < 50  # outside: the 200 MB block went back to the system when freed
    assert rss["inner_left"] - rss["start"] > 150  # inside: the freed block stays, ready for the next one
    assert rss["kept"] - rss["start"] < 300  # ... and the next one reuses it rather than taking 200 MB more
    assert rss["users_inside"] == 1 and rss["users_after"] == 0
    assert rss["after"] - rss["start"] < 50  # the last user left: all of it handed back
