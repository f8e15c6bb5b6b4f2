from outpost.endpoint.records import TaskResult
from outpost.endpoint.spool import ResultSpool


def test_results_survive_reopen_until_removed(tmp_path) -> None:
    path = tmp_path / "spool.db"
    s = ResultSpool(path)
    s.add([TaskResult(f"t{i}", "g", "success", result="00\nx") for i in range(5)])
    s.remove(["t0", "t1", "unknown", "t1"])  # an id twice (two acks in one) is no error
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
    body = s._read(*s._rows["t1"])
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
    assert list(s._rows) == ["small"]
    assert stat.S_IMODE(os.stat(s.log_path).st_mode) == 0o600
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


def _spool_with(tmp_path, n: int):
    s = ResultSpool(tmp_path / "spool.db")
    s.add([TaskResult(f"t{i}", "g", "success", result=f"00\n{i}") for i in range(n)])
    return s


def test_a_write_cut_short_by_a_crash_is_cut_off_and_the_rest_kept(tmp_path) -> None:
    """The endpoint dying in the middle of a write leaves a partial record at the end:
    it is not a result (it was never sent); everything before it is."""
    s = _spool_with(tmp_path, 3)
    s.close()
    whole = s.log_path.read_bytes()
    s = _spool_with(tmp_path, 0)
    s.add([TaskResult("late", "g", "success", result="00\nlate")])
    s.close()
    grown = s.log_path.read_bytes()
    for cut in (1, 5, len(grown) - len(whole) - 1):  # in the header, the id, the body
        s.log_path.write_bytes(grown[: len(grown) - cut])
        s = ResultSpool(tmp_path / "spool.db")
        assert sorted(r.task_id for chunk in s.all() for r in chunk) == ["t0", "t1", "t2"]
        assert s.log_path.read_bytes() == whole  # cut back to the last whole record
        s.close()


def test_a_corrupted_record_ends_what_is_read(tmp_path) -> None:
    s = _spool_with(tmp_path, 3)
    s.close()
    data = bytearray(s.log_path.read_bytes())
    data[-2] ^= 0xFF  # the last record's body: its CRC no longer matches
    s.log_path.write_bytes(bytes(data))
    s = ResultSpool(tmp_path / "spool.db")
    assert "t2" not in s and "t1" in s and s.get("t0") is not None
    s.close()


def test_the_journal_starts_over_when_nothing_is_held(tmp_path) -> None:
    s = _spool_with(tmp_path, 4)
    s.remove(["t0", "t1"])
    assert s.log_path.stat().st_size > 0
    s.remove(["t2", "t3"])
    assert s.log_path.stat().st_size == 0 and len(s) == 0
    s.add([TaskResult("again", "g", "success", result="00\nx")])
    s.close()
    s = ResultSpool(tmp_path / "spool.db")
    assert list(s._rows) == ["again"] and s.get("again").result == "00\nx"
    s.close()


def test_a_journal_of_mostly_removed_results_is_rewritten(tmp_path, monkeypatch) -> None:
    """Past COMPACT_BYTES, a journal that is mostly removals is rewritten with what it
    holds; what it holds survives, in and after the rewrite."""
    from outpost.endpoint import spool as spool_mod

    monkeypatch.setattr(spool_mod, "COMPACT_BYTES", 4096)
    s = ResultSpool(tmp_path / "spool.db")
    s.add([TaskResult("keep", "g", "success", result="00\nkept")])
    sizes = []
    for i in range(200):
        s.add([TaskResult(f"t{i}", "g", "success", result="00\n" + "y" * 50)])
        s.remove([f"t{i}"])
        sizes.append(s.log_path.stat().st_size)
    assert max(sizes) < 3 * 4096  # rewritten over and over, never left to grow
    assert min(sizes[10:]) < 4096
    assert len(s) == 1 and s.get("keep").result == "00\nkept"
    assert not s.log_path.with_name(s.log_path.name + ".tmp").exists()
    s.close()
    s = ResultSpool(tmp_path / "spool.db")
    assert len(s) == 1 and s.get("keep").result == "00\nkept"
    s.close()


def test_results_in_an_older_endpoints_sqlite_spool_are_moved_to_the_journal(tmp_path) -> None:
    import sqlite3

    import msgpack

    path = tmp_path / "spool.db"
    db = sqlite3.connect(str(path))
    db.execute("CREATE TABLE results (task_id TEXT PRIMARY KEY, body BLOB NOT NULL)")
    wire = TaskResult("old", "g", "success", result="00\nold").to_wire()
    db.execute("INSERT INTO results VALUES (?, ?)", ("old", msgpack.packb(wire)))
    db.commit()
    db.close()
    s = ResultSpool(path)
    assert not path.exists() and s.get("old") == TaskResult("old", "g", "success", result="00\nold")
    s.close()
    s = ResultSpool(path)  # now read from the journal
    assert list(s._rows) == ["old"]
    s.close()


def test_a_failed_write_leaves_nothing_spooled(tmp_path, monkeypatch) -> None:
    """A write that fails (a full disk) raises, and neither that result nor a part of
    its record is held afterwards."""
    import os

    import pytest

    from outpost.endpoint import spool as spool_mod

    s = _spool_with(tmp_path, 2)
    size = s.log_path.stat().st_size
    pwrite = os.pwrite

    def full(fd, data, offset):
        pwrite(fd, bytes(data[:3]), offset)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_mod.os, "pwrite", full)
    with pytest.raises(OSError):
        s.add([TaskResult("lost", "g", "success", result="00\nx")])
    monkeypatch.undo()
    assert "lost" not in s and s.log_path.stat().st_size == size
    s.add([TaskResult("next", "g", "success", result="00\ny")])
    s.close()
    s = ResultSpool(tmp_path / "spool.db")
    assert sorted(s._rows) == ["next", "t0", "t1"]
    s.close()


def test_an_unreadable_old_sqlite_spool_is_kept_aside_not_deleted(tmp_path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not a database" * 100)
    s = ResultSpool(path)
    assert len(s) == 0 and not path.exists()
    assert (tmp_path / "spool.db.unreadable").read_bytes() == b"this is not a database" * 100
    s.close()


def test_a_large_binary_result_is_written_in_pieces_and_read_back_byte_identical(
    tmp_path,
) -> None:
    """A large binary result (its binary form, bytes) goes to its file with writev, the
    value not copied first: the file is exactly the msgpack of its wire map, and after a
    reopen (an endpoint restart) the result is the same bytes, as is the result frame
    sent for it (``messages.encode``)."""
    import os

    import msgpack

    from outpost.common import messages as m
    from outpost.endpoint import spool as spool_mod

    path = tmp_path / "spool.db"
    values = [b"00\n" + os.urandom(n) for n in (spool_mod.FILE_MIN, 1_000_000, 3_000_001)]
    results = [
        TaskResult(f"r{i}", "g", "success", result=v, details={"pid": i})
        for i, v in enumerate(values)
    ]
    s = ResultSpool(path)
    s.add(results)
    for r in results:
        wire = msgpack.packb(r.to_wire(), use_bin_type=True)
        assert (s.dir / f"{r.task_id}.result").read_bytes() == wire
    s.close()
    s = ResultSpool(path)
    again = sorted((r for chunk in s.all() for r in chunk), key=lambda r: r.task_id)
    assert again == results and [r.result for r in again] == values
    frame = {"type": m.RESULT, "results": [r.to_wire() for r in again]}
    assert m.encode(frame) == msgpack.packb(frame, use_bin_type=True)
    s.close()
