"""`bench.ab`'s arithmetic and parsing: paired ratios, the bootstrap, shapes, run order."""

from __future__ import annotations

from typing import Any

import pytest

from bench.ab import arm_labels, bootstrap_interval, paired_ratios, parse_shape, round_order
from bench.driver import Shape


def row(arm: str, number: int, jobs: float, shape: str = "full:4x16") -> dict[str, Any]:
    return {"arm": arm, "round": number, "shape": shape, "jobs_per_s": jobs}


def test_paired_ratios_pair_runs_of_the_same_round_and_shape() -> None:
    rows = [
        row("A", 0, 100.0), row("B", 0, 110.0),
        row("B", 1, 90.0), row("A", 1, 120.0),
        row("A", 2, 50.0),  # B has no run in round 2: no pair
        row("A", 3, 10.0, "small:1x1"), row("B", 3, 99.0, "small:1x1"),  # another shape
    ]  # fmt: skip
    assert paired_ratios(rows, "B", "A", "full:4x16", "jobs_per_s") == [1.1, 0.75]
    assert paired_ratios(rows, "B", "A", "small:1x1", "jobs_per_s") == [9.9]


def test_bootstrap_interval_of_two_values_spans_both() -> None:
    # A resample's median is 1 (p 1/4), 1.5 (p 1/2) or 2 (p 1/4): the 5th and 95th
    # percentiles of 2,000 of them are 1 and 2.
    assert bootstrap_interval([1.0, 2.0]) == (1.0, 2.0)


def test_bootstrap_interval_is_narrow_when_the_values_agree() -> None:
    assert bootstrap_interval([1.05] * 7) == (1.05, 1.05)
    # Nine of ten at 1.0: a resample's median is 1.0 unless five or more draws hit 9.0
    # (p ~ 0.0016), so both ends are 1.0; the outlier does not widen it.
    assert bootstrap_interval([1.0] * 9 + [9.0]) == (1.0, 1.0)


def test_bootstrap_interval_is_seeded_and_refuses_nothing() -> None:
    values = [0.9, 1.1, 1.0, 1.3, 0.8, 1.2]
    low, high = bootstrap_interval(values)
    assert (low, high) == bootstrap_interval(values)
    assert min(values) <= low <= 1.05 <= high <= max(values)
    with pytest.raises(ValueError):
        bootstrap_interval([])


def test_parse_shape() -> None:
    assert parse_shape("full:4x16", 2.0, 0.5) == Shape(4, 16, 2.0, "full", 0.5)
    assert parse_shape("small:1x1:call", 1.0, 0.1) == Shape(1, 1, 1.0, "small", 0.1, style="call")
    for bad in ("full", "full:4", "full:4x", "full:0x16", "huge:4x16", "small:1x1:poll", "a:b:c:d"):
        with pytest.raises(ValueError):
            parse_shape(bad, 2.0, 0.5)


def test_round_order_reverses_every_other_round_and_rotates_every_two() -> None:
    arms = ["base", "base A/A", "new"]
    orders = [round_order(arms, n) for n in range(7)]
    assert orders[:4] == [arms, ["new", "base A/A", "base"],
                          ["base A/A", "new", "base"], ["base", "new", "base A/A"]]  # fmt: skip
    for first, second in zip(orders[::2], orders[1::2], strict=False):
        assert second == first[::-1]
    for arm in arms:  # over six rounds, each arm twice in each place
        assert [order.index(arm) for order in orders[:6]].count(1) == 2
    assert orders[6] == arms
    assert round_order([], 3) == []


def test_arm_labels_give_the_baseline_a_twin_and_number_repeats() -> None:
    assert arm_labels(["f0119a2", "HEAD"]) == ["f0119a2", "f0119a2 A/A", "HEAD"]
    assert arm_labels(["a", "b", "b"]) == ["a", "a A/A", "b", "b #2"]
