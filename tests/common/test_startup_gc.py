"""``pause_collector`` (the endpoint's start, until it has registered): the collector is
off until ``resume``, which freezes what start-up made and runs it again."""

from __future__ import annotations

import gc

from outpost.common.startup_gc import pause_collector


def test_paused_until_resumed_then_running_with_start_up_objects_frozen() -> None:
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    try:
        resume = pause_collector()
        assert not gc.isenabled()
        kept = [[] for _ in range(1000)]
        resume()
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen + len(kept)
    finally:
        gc.enable()
        gc.unfreeze()


def test_a_collector_paused_by_the_caller_stays_paused() -> None:
    gc.disable()
    try:
        pause_collector()()
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
