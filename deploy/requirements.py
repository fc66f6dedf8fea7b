#!/usr/bin/env python3
"""Print the project's requirements for the given extras, one per line, from pyproject.toml.

The image build installs these first, in a layer of their own, so that a change to the code
does not reinstall every dependency:  python requirements.py pyproject.toml cpu,es,amqp,faiss
Standard library only (it runs before anything is installed).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

SELF = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)\[(?P<extras>[^\]]+)\]$")


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    out: list[str] = list(project["dependencies"])
    seen: set[str] = set()
    todo = list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"error: {pyproject} has no extra {extra!r}")
        seen.add(extra)
        for req in optional[extra]:
            m = SELF.match(req)
            if m and m["name"] == project["name"]:  # elastichash[es,amqp]: expand in place
                todo += [e.strip() for e in m["extras"].split(",")]
            else:
                out.append(req)
    return list(dict.fromkeys(out))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: requirements.py PYPROJECT EXTRA[,EXTRA...]", file=sys.stderr)
        return 2
    extras = [e for e in argv[1].split(",") if e]
    print("\n".join(requirements(Path(argv[0]), extras)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
