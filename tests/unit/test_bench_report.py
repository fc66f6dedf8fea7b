"""The one table printer and results writer every benchmark in bench/ reports with."""

from __future__ import annotations

import json
from pathlib import Path

from bench.report import table, write_result


def test_a_table_places_titles_and_cells_by_each_columns_format() -> None:
    out = table([("method", "<8"), ("p50 ms", ">7.2f"), ("R@100", ">6.3f"), ("n", ">5d")],
                [("exact", 1.234, None, 10), ("mih", 12.5, 0.98765, 20000), ("x", "n/a", 1, 0)])
    assert out.splitlines() == [
        "method    p50 ms  R@100     n",
        "exact       1.23      -    10",
        "mih        12.50  0.988 20000",
        "x            n/a  1.000     0",
    ]


def test_results_go_to_bench_results_unless_a_path_is_given(tmp_path: Path) -> None:
    given = write_result("x", {"a": 1}, path=tmp_path / "deep" / "r.json")
    assert given == tmp_path / "deep" / "r.json"
    assert json.loads(given.read_text()) == {"a": 1}
    import bench.report as report

    assert Path(report.__file__).parent / "results" == report.RESULTS
