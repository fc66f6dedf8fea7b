"""How every benchmark reports: one aligned table printer and one writer of the JSON results.

A column is ``(title, spec)``: ``spec`` is a format spec whose alignment and width also place
the title (``"<44"``, ``">8.2f"``, ``">6.3f"``). A cell of ``None`` prints as ``-`` and a
string as it is, both placed by the column's alignment and width.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
_SPEC = re.compile(r"^(?P<align>[<>^]?)(?P<width>\d*)")


def _place(spec: str) -> str:
    """The alignment and width of a format spec (right-aligned when it names none)."""
    m = _SPEC.match(spec)
    assert m is not None
    return f"{m.group('align') or '>'}{m.group('width')}"


def _cell(value: Any, spec: str) -> str:
    if value is None or isinstance(value, str):
        return f"{'-' if value is None else value:{_place(spec)}}"
    return f"{value:{spec}}"


def header(columns: Sequence[tuple[str, str]]) -> str:
    return " ".join(f"{title:{_place(spec)}}" for title, spec in columns)


def row(columns: Sequence[tuple[str, str]], values: Sequence[Any]) -> str:
    return " ".join(_cell(v, spec) for v, (_, spec) in zip(values, columns, strict=True))


def table(columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]]) -> str:
    """The rows under a header, columns separated by one space."""
    return "\n".join([header(columns), *(row(columns, values) for values in rows)])


def write_result(name: str, result: Any, *, quick: bool = False,
                 path: Path | None = None) -> Path:
    """``result`` as JSON at ``path``, by default ``bench/results/<name>[_quick].json``."""
    if path is None:
        path = RESULTS / f"{name}{'_quick' if quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
