"""When sendfile from the arena is allowed (edge/cache/zerocopy.py): only over 4 KiB pages."""
from __future__ import annotations

from pathlib import Path

import pytest

from edge.cache.zerocopy import unsafe_reason

MOUNTS = """\
proc /proc proc rw,nosuid 0 0
/dev/sda1 / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw,relatime,size=24684096k 0 0
tmpfs /mnt/huge tmpfs rw,relatime,huge=within_size 0 0
tmpfs /mnt/nohuge tmpfs rw,relatime,huge=never 0 0
tmpfs /mnt/with\\040space tmpfs rw 0 0
"""


def thp(tmp_path: Path, top: str | None, sizes: dict[str, str] | None = None) -> str:
    """A fake /sys/kernel/mm/transparent_hugepage with the given selections."""
    root = tmp_path / "thp"
    root.mkdir(parents=True)
    choices = ["always", "within_size", "advise", "never", "deny", "force"]
    if top is not None:
        (root / "shmem_enabled").write_text(
            " ".join(f"[{c}]" if c == top else c for c in choices) + "\n")
    for size, sel in (sizes or {}).items():
        d = root / f"hugepages-{size}"
        d.mkdir()
        (d / "shmem_enabled").write_text(
            " ".join(f"[{c}]" if c == sel else c
                     for c in ("always", "inherit", "within_size", "advise", "never")) + "\n")
    return str(root)


@pytest.fixture
def mounts(tmp_path: Path) -> str:
    p = tmp_path / "mounts"
    p.write_text(MOUNTS)
    return str(p)


def test_safe_on_plain_tmpfs_and_memfd(tmp_path, mounts):
    root = thp(tmp_path, "never", {"2048kB": "inherit", "64kB": "never"})
    assert unsafe_reason(None, thp_root=root, mounts=mounts) is None
    assert unsafe_reason("/dev/shm/edge-8080.arena", thp_root=root, mounts=mounts) is None
    assert unsafe_reason("/mnt/nohuge/a", thp_root=root, mounts=mounts) is None
    assert unsafe_reason("/mnt/with space/a", thp_root=root, mounts=mounts) is None


def test_no_thp_support_at_all_is_safe(tmp_path, mounts):
    assert unsafe_reason(None, thp_root=str(tmp_path / "absent"), mounts=mounts) is None


@pytest.mark.parametrize("top", ["always", "within_size", "force"])
def test_huge_shmem_turns_it_off(tmp_path, mounts, top):
    root = thp(tmp_path, top)
    reason = unsafe_reason(None, thp_root=root, mounts=mounts)
    assert reason is not None and f"shmem_enabled is {top}" in reason


def test_a_multi_size_setting_turns_it_off(tmp_path, mounts):
    root = thp(tmp_path, "never", {"64kB": "always"})
    assert "hugepages-64kB/shmem_enabled is always" in unsafe_reason(None, thp_root=root,
                                                                     mounts=mounts)
    root2 = thp(tmp_path / "b", "within_size", {"2048kB": "inherit"})
    assert unsafe_reason(None, thp_root=root2, mounts=mounts) is not None


def test_advise_and_deny_are_safe(tmp_path, mounts):
    """The arena never asks for huge pages (no MADV_HUGEPAGE), so "advise" gives it none."""
    for i, top in enumerate(("advise", "deny")):
        root = thp(tmp_path / str(i), top, {"2048kB": "inherit"})
        assert unsafe_reason(None, thp_root=root, mounts=mounts) is None


def test_the_arena_file_must_be_on_tmpfs_without_huge_pages(tmp_path, mounts):
    root = thp(tmp_path, "never")
    assert "mounted with huge=within_size" in unsafe_reason("/mnt/huge/x.arena", thp_root=root,
                                                            mounts=mounts)
    assert "on ext4, not tmpfs" in unsafe_reason("/var/cache/edge.arena", thp_root=root,
                                                 mounts=mounts)
