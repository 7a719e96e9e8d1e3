"""The figures of ``thread_scaling.py`` beside its targets: how far the rounds spread (no PyTorch needed)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import thread_scaling  # noqa: E402


def test_the_spread_of_a_target_is_the_middle_half_of_its_rounds():
    def record(library, threads, round_, ms):
        return {"library": library, "threads": threads, "round": round_, "ms": {"case": ms}}

    # xpnet's time at 1 and 2 threads and PyTorch's, in five rounds of a machine that drifts.
    times = {("xpnet", 1): [20, 22, 30, 21, 26], ("xpnet", 2): [12, 14, 15, 11, 13],
             ("torch", 1): [25, 24, 36, 26, 30], ("torch", 2): [15, 16, 24, 14, 20]}
    records = [record(lib, n, r, ms) for (lib, n), values in times.items() for r, ms in enumerate(values)]
    ratios = thread_scaling.ratio_by_round(records, "case", 2)
    assert ratios == pytest.approx([12 / 15, 14 / 16, 15 / 24, 11 / 14, 13 / 20])
    speedups = thread_scaling.speedup_ratio_by_round(records, "case", 1, 2)
    assert speedups == pytest.approx([(x1 / x2) / (t1 / t2) for x1, x2, t1, t2 in zip(*times.values())])
    assert speedups[2] == pytest.approx((30 / 15) / (36 / 24))  # 2x against 1.5x
    low, high = thread_scaling.middle_half(ratios)
    assert (low, high) == pytest.approx((13 / 20, 12 / 15))  # the 2nd and 4th of the five, sorted
    assert thread_scaling.middle_half([0.5]) == (0.5, 0.5)
