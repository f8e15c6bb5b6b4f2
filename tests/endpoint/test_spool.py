from outpost.endpoint.spool import ResultSpool


def test_results_survive_reopen_until_removed(tmp_path) -> None:
    path = tmp_path / "spool.db"
    s = ResultSpool(path)
    s.add([{"task_id": f"t{i}", "status": "success", "result": "00\nx"} for i in range(5)])
    s.remove(["t0", "t1", "unknown"])
    s.close()
    s = ResultSpool(path)
    assert len(s) == 3 and "t2" in s and "t0" not in s
    assert s.get("t3")["result"] == "00\nx"
    assert sorted(r["task_id"] for chunk in s.all(chunk=2) for r in chunk) == ["t2", "t3", "t4"]
