"""The service's data file as the broker knows it: its fingerprint, served in chunks.

Workers on hosts without the file fetch it from here (FETCH_DATA / DATA_CHUNK). The
broker never parses the file: it only hashes and slices bytes.
"""

from __future__ import annotations

import logging
from pathlib import Path

from protocol import config
from protocol.fingerprint import file_sha256
from protocol.messages import DataChunk

log = logging.getLogger("lss.broker")


class DataFileError(Exception):
    """The data file cannot be read (missing, a directory, not readable)."""


class DataFile:
    """A read-only data file: `fingerprint` is its SHA-256, `chunk()` reads a slice."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.total_bytes = self.path.stat().st_size
            self.fingerprint = file_sha256(self.path)
        except OSError as exc:
            raise DataFileError(f"{self.path}: {exc.strerror or exc}") from exc
        log.info("data %s: %d bytes, sha256 %s", self.path, self.total_bytes, self.fingerprint)

    def chunk(self, offset: int, length: int) -> DataChunk | None:
        """Up to `length` bytes (capped at DATA_CHUNK_BYTES) from `offset`; None if out of range."""
        if offset < 0 or length < 1 or offset > self.total_bytes:
            return None
        with open(self.path, "rb") as stream:
            stream.seek(offset)
            data = stream.read(min(length, config.DATA_CHUNK_BYTES))
        return DataChunk(offset, data, self.total_bytes, self.fingerprint)
