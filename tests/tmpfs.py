"""A small tmpfs for disk-full tests: mounted for one test, always unmounted.

Mounting needs root (CI runs as root); elsewhere the test is skipped and says why.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

CHUNK_BYTES = 1 << 20


@contextlib.contextmanager
def small_tmpfs(mount_point: Path, size_bytes: int) -> Iterator[Path]:
    """A fresh tmpfs of `size_bytes` at `mount_point`, unmounted on the way out."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs as a full disk (CI runs as root)")
    mount_point.mkdir(parents=True, exist_ok=True)
    size = f"size={size_bytes}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)


def free_bytes(directory: Path) -> int:
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize


def leave_free(directory: Path, left_bytes: int, name: str = "filler") -> Path:
    """Grow the file `directory/name` until about `left_bytes` are free (whole pages).

    Others may be writing meanwhile: if the disk fills first, it stays full.
    """
    filler = directory / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while (missing := free_bytes(directory) - left_bytes) > 0:
            os.write(fd, bytes(min(missing, CHUNK_BYTES)))
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler
