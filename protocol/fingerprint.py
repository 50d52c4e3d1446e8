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


STANDIN_FINGERPRINT = "02cfc954ed351c1fcf9b836fe8a6c255a04522accb2849712123044a06e2f25d"
"""The default stand-in's (`workers.standin`: 18,000 rows, seed 2024), which `run.sh` and
the tests generate when the real file is absent: answers from it are not real figures."""


def is_standin(fingerprint: str | None) -> bool:
    """Whether a data fingerprint is the generated stand-in's."""
    return fingerprint == STANDIN_FINGERPRINT
