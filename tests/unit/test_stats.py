"""The one percentile every report uses (policies/stats.py): numpy's default definition."""

import random

import numpy as np
import pytest

from shunter.policies.stats import percentile


def test_no_values_have_no_percentile() -> None:
    assert percentile([], 0.5) is None


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 1000])
@pytest.mark.parametrize("q", [0.0, 0.5, 0.95, 0.99, 1.0])
def test_matches_numpy_linear_interpolation(n: int, q: float) -> None:
    rng = random.Random(n * 1000 + int(q * 100))
    values = [rng.lognormvariate(0, 1) for _ in range(n)]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q * 100)))


def test_interpolates_between_ranks() -> None:
    assert percentile([0.0, 10.0], 0.99) == pytest.approx(9.9)
    assert percentile([5.0, 1.0, 3.0], 0.5) == 3.0  # unsorted input is sorted first


def test_presorted_input_is_taken_as_it_is() -> None:
    # Trusts the caller: the same list read as sorted gives its middle element, not the median.
    assert percentile([9.0, 1.0, 5.0], 0.5, presorted=True) == 1.0
    assert percentile([1.0, 5.0, 9.0], 0.5, presorted=True) == 5.0


def test_rounds_to_digits() -> None:
    assert percentile([0.0, 1.0], 1 / 3, digits=2) == 0.33
