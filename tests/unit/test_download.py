"""download-data against a local HTTP server on loopback: good files land, bad ones do not."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from workers.download import main

HEADER = (
    "YearStart,YearEnd,LocationDesc,Question,Data_Value,StratificationCategory1,Stratification1\n"
)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep test output clean."""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "good.csv").write_text(HEADER + "2015,2015,Ohio,Q,30.1,Total,Total\n")
    (root / "bad.csv").write_text("YearStart,LocationDesc\n2015,Ohio\n")
    handler = partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_good_file_is_saved(served: tuple[str, Path]) -> None:
    base, tmp = served
    out = tmp / "data" / "full.csv"
    assert main(["--url", f"{base}/good.csv", "--out", str(out)]) == 0
    assert out.read_text().startswith(HEADER)


def test_a_file_missing_columns_is_rejected_and_not_kept(
    served: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base, tmp = served
    out = tmp / "data" / "full.csv"
    assert main(["--url", f"{base}/bad.csv", "--out", str(out)]) == 1
    assert "Question" in capsys.readouterr().err
    assert not out.exists() and not list(out.parent.glob("*.partial"))


def test_an_unreachable_url_fails_cleanly(served: tuple[str, Path]) -> None:
    base, tmp = served
    assert main(["--url", f"{base}/missing.csv", "--out", str(tmp / "x.csv")]) == 1
