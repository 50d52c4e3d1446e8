"""The data set's fingerprint: the SHA-256 of the file's bytes, as lowercase hex."""

from __future__ import annotations

import hashlib
from pathlib import Path

_READ_BYTES = 1 << 20


def file_sha256(path: str | Path) -> str:
    """SHA-256 of the file at `path`, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(_READ_BYTES):
            digest.update(block)
    return digest.hexdigest()
