"""broker.store.numbering.NumberBlocks: job numbers reserved in blocks from a shared
sequence, handed out in order, and what the highest number told is."""

from __future__ import annotations

from broker.store.numbering import NumberBlocks


def test_numbers_are_handed_out_lowest_first_across_blocks() -> None:
    blocks = NumberBlocks()
    assert blocks.take() is None and len(blocks) == 0
    blocks.add([3, 1, 2])
    blocks.add([7, 8])  # another broker reserved 4-6 meanwhile
    assert len(blocks) == 5
    assert [blocks.take() for _ in range(6)] == [1, 2, 3, 7, 8, None]


def test_the_highest_number_told_leaves_out_this_brokers_unused_numbers() -> None:
    blocks = NumberBlocks()
    blocks.add([1, 2, 3])
    blocks.add([7, 8, 9])  # 4-6 are another broker's
    blocks.take()
    assert blocks.highest_told(9) == 6  # 7-9 unused here; another's 4-6 may be told
    assert blocks.highest_told(12) == 12  # someone reserved above every number here
    for _ in range(3):
        blocks.take()  # 2, 3 and 7: now 8-9 are left
    assert blocks.highest_told(9) == 7
    assert blocks.highest_told(0) == 0
