"""``collector_paused`` (the service's start; the endpoint's, until it has registered):
the collector is off until the block's end, which freezes what start-up made and runs
it again; a failed start leaves it running too (``tests/test_cli.py`` checks the
endpoint's)."""

from __future__ import annotations

import gc

import pytest

from outpost.common.startup_gc import collector_paused


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
