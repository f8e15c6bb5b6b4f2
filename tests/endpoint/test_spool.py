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


def test_large_results_are_files_that_survive_reopen(tmp_path) -> None:
    import os
    import stat

    from outpost.endpoint import spool as spool_mod

    path = tmp_path / "spool.db"
    big = "00\n" + "x" * spool_mod.FILE_MIN
    s = ResultSpool(path)
    s.add([TaskResult(f"b{i}", "g", "success", result=big) for i in range(10)])
    s.add([TaskResult("small", "g", "success", result="00\nx")])
    files = sorted(os.listdir(s.dir))
    assert files == sorted(f"b{i}.result" for i in range(10))
    assert stat.S_IMODE(os.stat(s.dir).st_mode) == 0o700
    assert all(stat.S_IMODE(os.stat(s.dir / f).st_mode) == 0o600 for f in files)
    assert s._db.execute("SELECT task_id FROM results").fetchall() == [("small",)]
    s.remove(["b0", "b1", "small"])
    s.close()
    # A write that did not finish (the endpoint died mid-way) is not a result.
    (s.dir / "b99.result.tmp").write_bytes(b"partial")
    s = ResultSpool(path)
    assert len(s) == 8 and "b2" in s and "b0" not in s and "small" not in s
    assert "b99" not in s and not (s.dir / "b99.result.tmp").exists()
    assert s.get("b5") == TaskResult("b5", "g", "success", result=big)
    got = [r for chunk in s.all(chunk=3) for r in chunk]
    assert sorted(r.task_id for r in got) == [f"b{i}" for i in range(2, 10)]
    assert all(r.result == big for r in got)
    s.remove([f"b{i}" for i in range(2, 10)])
    assert len(s) == 0 and os.listdir(s.dir) == []
    s.close()
