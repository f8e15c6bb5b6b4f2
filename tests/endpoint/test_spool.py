from outpost.endpoint.records import TaskResult
from outpost.endpoint.spool import ResultSpool


def test_results_survive_reopen_until_removed(tmp_path) -> None:
    path = tmp_path / "spool.db"
    s = ResultSpool(path)
    s.add([TaskResult(f"t{i}", "g", "success", result="00\nx") for i in range(5)])
    s.remove(["t0", "t1", "unknown"])
    s.close()
    s = ResultSpool(path)
    assert len(s) == 3 and "t2" in s and "t0" not in s
    got = s.get("t3")
    assert got == TaskResult("t3", "g", "success", result="00\nx")
    assert sorted(r.task_id for chunk in s.all(chunk=2) for r in chunk) == ["t2", "t3", "t4"]


def test_a_result_is_kept_in_its_wire_form(tmp_path) -> None:
    """What the spool holds is the ``result`` frame's map: absent fields stay absent."""
    import msgpack

    s = ResultSpool(tmp_path / "spool.db")
    details = {"code": "TaskExecutionFailed", "user_message": "no"}
    s.add([TaskResult("t1", None, "failed", exception="Traceback...", error_details=details)])
    body = s._db.execute("SELECT body FROM results").fetchone()[0]
    assert msgpack.unpackb(body) == {
        "task_id": "t1",
        "task_group_id": None,
        "status": "failed",
        "exception": "Traceback...",
        "error_details": details,
    }
    s.close()
