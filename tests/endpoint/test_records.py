"""Typed tasks and results inside the endpoint (outpost/endpoint/records.py)."""

from __future__ import annotations

import pickle

import pytest

from outpost.endpoint.records import BadTask, Task, TaskResult


def _every_field_set(cls: type) -> object:
    values = {
        "task_id": "t1",
        "function_id": "f1",
        "payload": "p",
        "function_code": "c",
        "task_group_id": "g",
        "resource_specification": {"num_nodes": 1},
        "if_lost": "lost",
        "suspect": True,
        "binary_result": True,
        "status": "failed",
        "result": "r",
        "exception": "e",
        "error_details": {"code": "X", "user_message": "m"},
        "details": {"pid": 1},
    }
    names = list(cls.__slots__)
    return cls(**{n: values[n] for n in names})


@pytest.mark.parametrize("cls", [Task, TaskResult])
def test_records_pickle_with_every_field(cls: type) -> None:
    """Engines send them through process pipes: nothing may be lost on the way."""
    obj = _every_field_set(cls)
    assert pickle.loads(pickle.dumps(obj)) == obj


def test_task_from_the_wire() -> None:
    t = Task.from_wire(
        {"task_id": "t", "function_id": "f", "payload": "p", "task_group_id": None, "x": 1}
    )
    assert t == Task("t", "f", "p")
    assert t.to_wire() == {
        "task_id": "t",
        "function_id": "f",
        "payload": "p",
        "task_group_id": None,
    }


@pytest.mark.parametrize(
    "raw, why",
    [
        ([], "must be a map"),
        ({"function_id": "f", "payload": "p"}, "'task_id' is missing"),
        ({"task_id": "t", "function_id": 5, "payload": "p"}, "'function_id'"),
        ({"task_id": "t", "function_id": "f", "payload": 5}, "'payload'"),
        ({"task_id": "t", "function_id": "f", "payload": "p", "function_code": 1}, "function_code"),
        (
            {"task_id": "t", "function_id": "f", "payload": "p", "resource_specification": "x"},
            "resource_specification",
        ),
    ],
)
def test_a_bad_task_says_which_field(raw: object, why: str) -> None:
    with pytest.raises(BadTask, match=why):
        Task.from_wire(raw)


def test_result_wire_form_leaves_absent_fields_out() -> None:
    ok = TaskResult("t", "g", "success", result="00\n1", details={"pid": 1})
    assert ok.to_wire() == {
        "task_id": "t",
        "task_group_id": "g",
        "status": "success",
        "result": "00\n1",
        "details": {"pid": 1},
    }
    assert TaskResult.from_wire(ok.to_wire()) == ok
    failed = TaskResult(
        "t", None, "failed", exception="tb", error_details={"code": "C", "user_message": "m"}
    )
    assert set(failed.to_wire()) == {
        "task_id",
        "task_group_id",
        "status",
        "exception",
        "error_details",
    }
    assert TaskResult.from_wire(failed.to_wire()) == failed
    assert failed.size == 2


def test_records_compare_and_print_by_their_fields() -> None:
    t = Task("t", "f", "p", task_group_id="g")
    assert t == Task("t", "f", "p", task_group_id="g")
    assert t != Task("t", "f", "p")
    assert t != TaskResult("t", "g", "success")
    assert repr(t).startswith("Task(task_id='t', function_id='f', payload='p'")
    assert "status='failed'" in repr(TaskResult("t", None, "failed"))
    with pytest.raises(TypeError):
        hash(t)  # mutable records (engines set ``suspect``, the agent ``function_code``)
    with pytest.raises(AttributeError):
        t.other = 1  # type: ignore[attr-defined]
