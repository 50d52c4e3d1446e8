"""`./run.sh download-data`: download the real CDC data set and check that it can be loaded.

The file is written beside its final name and renamed into place only once complete and
carrying every column a job needs, so an interrupted download never replaces good data.
These build machines have no network; users' machines do.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
import urllib.request
from pathlib import Path

from workers.dataset import DatasetError, check_columns

CDC_URL = "https://data.cdc.gov/api/views/hn4x-zwk7/rows.csv?accessType=DOWNLOAD"
DEFAULT_OUT = "data/nutrition_activity_obesity_usa_full.csv"
TIMEOUT_S = 60.0
BLOCK_BYTES = 1 << 20


def download(url: str, out: Path, timeout_s: float = TIMEOUT_S) -> int:
    """Fetch `url` into `out`, check its header; returns the number of bytes written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout_s) as response,
            open(partial, "wb") as sink,
        ):
            shutil.copyfileobj(response, sink, BLOCK_BYTES)
        check_header(partial)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out.stat().st_size


def check_header(path: Path) -> None:
    """Raise `DatasetError` unless the CSV's header has every required column."""
    with open(path, newline="", encoding="utf-8-sig") as stream:
        header = next(csv.reader(io.StringIO(stream.readline())), [])
    check_columns(header, str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="download-data", description=__doc__)
    parser.add_argument("--url", default=CDC_URL, help="where to download from")
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help="where to save it")
    args = parser.parse_args(argv)
    print(f"downloading {args.url}\n         to {args.out}", file=sys.stderr)
    try:
        size = download(args.url, args.out)
    except (OSError, DatasetError) as exc:
        print(f"download-data: {exc}", file=sys.stderr)
        return 1
    print(f"saved {size:,} bytes; run.sh now uses it (or set LSS_DATA={args.out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
