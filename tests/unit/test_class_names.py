"""One meaning per name: no two classes of the project's packages share a name."""

from __future__ import annotations

import ast
from collections import defaultdict

from bench.service import ROOT

PACKAGES = ("protocol", "broker", "workers", "clients", "bench")
# bench's producers implement one `Producer` protocol (bench/driver.py) by design.
SHARED_ON_PURPOSE = {"Producer"}


def classes_by_name() -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ClassDef):
                    found[node.name].append(str(path.relative_to(ROOT)))
    return found


def test_each_class_name_names_one_thing() -> None:
    shared = {name: where for name, where in classes_by_name().items() if len(where) > 1}
    assert set(shared) <= SHARED_ON_PURPOSE, shared


def test_the_names_that_meant_two_things_now_mean_one() -> None:
    found = classes_by_name()
    assert found["Statistics"] == ["workers/statistics.py"]
    assert found["Cluster"] == ["broker/cluster.py"]
    assert "Gateway" not in found
    assert found["Limits"] == ["protocol/decoding.py"]  # the HTTP server's are HttpLimits
