"""lean_collector: frozen heap and a higher threshold inside, everything restored after."""

from __future__ import annotations

import gc

import pytest

from config.collector import lean_collector


def test_nested_blocks_freeze_once_and_restore_the_collector() -> None:
    before_threshold, before_frozen = gc.get_threshold(), gc.get_freeze_count()
    with lean_collector(threshold=12_345):
        assert gc.get_threshold()[0] == 12_345
        frozen = gc.get_freeze_count()
        assert frozen > before_frozen  # the objects that existed at entry are not walked
        made = [[] for _ in range(1_000)]  # tracked objects made after the freeze
        with lean_collector(threshold=99):  # a scoring run inside the demo: leaves it alone
            assert gc.get_threshold()[0] == 12_345
        # Not frozen again: the objects made since are not in the permanent generation. (Frozen
        # objects another thread frees leave it, so the count may only fall: xdist's threads do.)
        assert gc.get_threshold()[0] == 12_345 and gc.get_freeze_count() < frozen + len(made)
    assert gc.get_threshold() == before_threshold
    assert gc.get_freeze_count() == 0  # unfrozen: the collector sees them again


def test_an_error_inside_still_restores_the_collector() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), lean_collector():
        raise RuntimeError("boom")
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_cycles_made_inside_are_still_collected() -> None:
    with lean_collector():
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
