"""carehub.domain.fifo: a bounded cache that drops the entry added longest ago."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carehub.domain.fifo import FifoCache


def test_a_full_cache_drops_the_oldest_entry_and_a_replaced_entry_keeps_its_place() -> None:
    cache: FifoCache[str, int] = FifoCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 10)  # replaced: still the oldest
    cache.put("c", 3)
    assert "a" not in cache and cache.get("a") is None
    assert (cache.get("b"), cache.get("c"), len(cache)) == (2, 3, 2)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        FifoCache(0)


@given(st.integers(1, 8), st.lists(st.tuples(st.integers(0, 20), st.integers()), max_size=200))
def test_it_holds_what_a_list_of_the_newest_distinct_keys_holds(capacity: int, puts: list[tuple[int, int]]) -> None:
    cache: FifoCache[int, int] = FifoCache(capacity)
    order: list[int] = []  # keys in first-insertion order, oldest first (the reference)
    values: dict[int, int] = {}
    for key, value in puts:
        cache.put(key, value)
        if key not in values:
            if len(order) == capacity:
                del values[order.pop(0)]
            order.append(key)
        values[key] = value
    assert len(cache) == len(values) <= capacity
    assert all(cache.get(k) == v for k, v in values.items())
