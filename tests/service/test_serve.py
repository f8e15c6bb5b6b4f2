"""``outpost service start``'s start-up: the cyclic collector is paused while the service
imports and builds its app, and is running again (with the start-up objects frozen) once
it serves; a failed start leaves it running too."""

from __future__ import annotations

import gc

import pytest

from outpost.service.serve import collector_paused


def test_the_collector_is_paused_while_starting_and_running_after() -> None:
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


def test_a_failed_start_leaves_the_collector_running() -> None:
    try:
        with pytest.raises(RuntimeError), collector_paused():
            raise RuntimeError("cannot start")
        assert gc.isenabled()
    finally:
        gc.unfreeze()


def test_a_collector_paused_by_the_caller_stays_paused() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
