"""``pause_collector`` (the endpoint's start, until it has registered) and
``collector_paused`` (the service's start, a block): the collector is off until
``resume`` or the block's end, which freeze what start-up made and run it again; a
failed start leaves it running too."""

from __future__ import annotations

import gc

import pytest

from outpost.common.startup_gc import collector_paused, pause_collector


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


def test_a_block_is_run_paused_and_the_collector_runs_after() -> None:
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    try:
        with collector_paused():
            assert not gc.isenabled()
            kept = [[] for _ in range(1000)]
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen + len(kept)
    finally:
        gc.unfreeze()


def test_a_block_that_fails_leaves_the_collector_running() -> None:
    try:
        with pytest.raises(RuntimeError), collector_paused():
            raise RuntimeError("cannot start")
        assert gc.isenabled()
    finally:
        gc.unfreeze()


def test_a_block_paused_by_the_caller_stays_paused() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
