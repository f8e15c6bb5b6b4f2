"""resource_specification checks for MPI-mode engines: every value Parsl's MPI scheduler
would trip over is refused with what to change; good ones come back complete."""

from __future__ import annotations

import pytest

from outpost.endpoint.engines._mpi_spec import SpecError, check_spec


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ({"num_nodes": 2, "ranks_per_node": 4}, (2, 4, 8, "")),
        ({"num_nodes": 2, "num_ranks": 8}, (2, 4, 8, "")),
        ({"num_nodes": 1, "ranks_per_node": 3, "num_ranks": 3}, (1, 3, 3, "")),
        (
            {"num_nodes": 1, "ranks_per_node": 2, "launcher_options": "--overlap"},
            (1, 2, 2, "--overlap"),
        ),
    ],
)
def test_good_specs_come_back_complete(spec, want) -> None:
    got = check_spec(spec, nodes_per_block=4)
    assert (
        got["num_nodes"],
        got["ranks_per_node"],
        got["num_ranks"],
        got["launcher_options"],
    ) == want


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (None, "each needs a resource_specification"),
        ({}, "each needs a resource_specification"),
        ({"ranks_per_node": 2}, "needs num_nodes"),
        ({"num_nodes": 0, "num_ranks": 4}, "num_nodes must be a whole number >= 1"),
        ({"num_nodes": -1, "ranks_per_node": 1}, "num_nodes must be a whole number >= 1"),
        ({"num_nodes": "2", "ranks_per_node": 1}, "num_nodes must be a whole number >= 1, not '2'"),
        ({"num_nodes": 1.5, "ranks_per_node": 1}, "not 1.5"),
        ({"num_nodes": True, "ranks_per_node": 1}, "not True"),
        ({"num_nodes": [1], "ranks_per_node": 1}, "not [1]"),
        (
            {"num_nodes": 8, "ranks_per_node": 1},
            "asks for 8 nodes, and this endpoint's blocks have 4",
        ),
        ({"num_nodes": 2}, "needs ranks_per_node or num_ranks"),
        ({"num_nodes": 2, "num_ranks": 3}, "not a multiple of num_nodes"),
        (
            {"num_nodes": 2, "ranks_per_node": 2, "num_ranks": 5},
            "is not num_nodes × ranks_per_node",
        ),
        ({"num_nodes": 1, "ranks_per_node": 1, "launcher_options": "-n 1\nrm -rf ~"}, "one line"),
        ({"num_nodes": 1, "ranks_per_node": 1, "launcher_options": 3}, "one line of text"),
        ({"num_nodes": 1, "ranks_per_node": 1, "priority": 1}, "unknown key(s) priority"),
    ],
)
def test_bad_specs_say_what_to_change(spec, message) -> None:
    with pytest.raises(SpecError) as e:
        check_spec(spec, nodes_per_block=4)
    assert message in str(e.value)
