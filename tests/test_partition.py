"""Cutting sequences for engines and joining them back."""

from __future__ import annotations

import numpy as np
import pytest

from ipcluster import partition


@pytest.mark.parametrize("dist", ["b", "r"])
@pytest.mark.parametrize("n", [1, 3, 4, 7])
def test_parts_join_back_to_the_original(dist, n):
    seq = list(range(10))
    parts = partition.parts(seq, n, dist)
    assert len(parts) == n and sorted(x for p in parts for x in p) == seq
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert partition.join(parts, dist) == seq
    arr = np.arange(20).reshape(10, 2)
    assert np.array_equal(partition.join(partition.parts(arr, n, dist), dist), arr)


def test_block_parts_are_consecutive_and_array_parts_are_views():
    arr = np.arange(10)
    parts = partition.parts(arr, 3, "b")
    assert [list(p) for p in parts] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert all(np.shares_memory(p, arr) for p in parts)


def test_bad_dist_and_unsliceable_sequences_say_what_to_do():
    with pytest.raises(ValueError, match="dist must be 'b' .* or 'r' .*, not 'x'"):
        partition.parts([1, 2], 2, "x")
    with pytest.raises(TypeError, match="sliced .* not a set; wrap it in list"):
        partition.parts({1, 2, 3}, 2)
    with pytest.raises(TypeError, match="not a generator"):
        partition.parts((i for i in range(3)), 2)
