"""The latency benches' run order: timed in one fixed order, the file right after the fp32 one ran
slower for that place alone (bench/order_bias.py; EfficientNet-B0's edgeconv int8 file 3 % slower
than the same bytes timed one place later), and that position made edgeconv's file read 3–5 %
slower than ai-edge-quantizer's in bench/int8_vs_aiq.py. The rounds now rotate
through a balanced design: pure bookkeeping, checked without a runtime."""
from __future__ import annotations

import collections

import pytest

from bench.int8_vs_aiq import balanced_orders, rounds

BENCH_FILES = ["fp32", "edgeconv npu", "edgeconv cpu", "aiq", "litert pt2e"]


def _after(schedule: list[list[str]]) -> collections.Counter:
    """(file run just before, file) pairs within the rounds."""
    return collections.Counter((r[i - 1], r[i]) for r in schedule for i in range(1, len(r)))


@pytest.mark.parametrize("n", range(2, 9))
def test_every_file_follows_every_other_equally_often(n):
    orders = balanced_orders(n)
    assert len(orders) == (n if n % 2 == 0 else 2 * n)
    assert all(sorted(o) == list(range(n)) for o in orders)
    after = _after(orders)
    assert len(after) == n * (n - 1) and len(set(after.values())) == 1, after
    at = collections.Counter((i, f) for o in orders for i, f in enumerate(o))
    assert len(at) == n * n and len(set(at.values())) == 1  # and sits at every place equally often


def test_int8_vs_aiq_schedule_no_file_always_runs_after_fp32():
    schedule = rounds(BENCH_FILES, 30)
    assert len(schedule) == 30  # 3 whole cycles of the 10 orders of 5 files
    after_fp32 = collections.Counter(b for (a, b) in _after(schedule).elements() if a == "fp32")
    # each of the other four files right after fp32 equally often (the old fixed order: edgeconv npu 30 times)
    assert sorted(after_fp32) == sorted(BENCH_FILES[1:]) and len(set(after_fp32.values())) == 1, after_fp32
    assert len(rounds(BENCH_FILES, 31)) == 40  # rounded up to whole cycles
    assert rounds(BENCH_FILES, 3, balanced=False) == [BENCH_FILES] * 3
