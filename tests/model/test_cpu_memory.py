"""Process memory settings: glibc's malloc asks for huge pages in the long-running commands."""

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
