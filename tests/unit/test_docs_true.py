"""Every command, make target and HTTP endpoint the README (and docs/API.md) names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp import web

from elastichash.cli import build_parser
from gateway.app import create_app
from gateway.config import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
API = (ROOT / "docs/API.md").read_text()


def _subcommands(parser: object) -> dict[str, object]:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def named_commands(text: str) -> set[tuple[str, ...]]:
    """`elastichash CMD [SUB]` as written in the text (options and placeholders skipped)."""
    found = set()
    for m in re.finditer(r"elastichash((?: -v+)?(?: [a-z][a-z-]+){1,2})", text):
        words = tuple(w for w in m.group(1).split() if not w.startswith("-"))
        found.add(words)
    return found


@pytest.mark.parametrize("words", sorted(named_commands(README)), ids=" ".join)
def test_every_command_the_readme_names_exists(words: tuple[str, ...]) -> None:
    commands = _subcommands(build_parser())
    assert words[0] in commands, f"`elastichash {words[0]}` is not a command"
    if len(words) > 1:
        subs = _subcommands(commands[words[0]])
        # A second word is a sub-command where the command has them, else an argument.
        assert not subs or words[1] in subs, f"`elastichash {' '.join(words)}`"


def test_every_make_target_the_readme_names_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    named = set(re.findall(r"`make ([a-z][a-z-]*)", README))
    assert named, "the README names no make target"
    assert named <= targets, named - targets


def named_endpoints(text: str) -> set[tuple[str | None, str]]:
    found: set[tuple[str | None, str]] = set()
    for m in re.finditer(r"(?:\b(GET|POST|DELETE|PUT) )?`?(?:localhost:8080)?(/v1/[\w{}<>./-]*|"
                         r"/healthz|/readyz|/metrics)", text):
        path = re.sub(r"<[^>]+>|\{[^}]+\}", "x", m.group(2)).rstrip(".")
        found.add((m.group(1), path))
    curl_delete = re.findall(r"curl -X DELETE \S*?(/v1/\S+)", text)
    for path in curl_delete:
        found.add(("DELETE", re.sub(r"<[^>]+>", "x", path)))
    return found


ENDPOINTS = sorted(named_endpoints(README) | named_endpoints(API), key=str)


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_the_docs_name_is_routed(method: str | None, path: str) -> None:
    app = create_app(GatewaySettings())
    routes: list[tuple[str, re.Pattern[str]]] = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        template = info.get("formatter") or info.get("path") or info.get("prefix", "")
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", str(template))
        if "prefix" in info:
            pattern += ".*"
        routes.append((route.method, re.compile(pattern + "/?")))
    matches = [m for m, pattern in routes if pattern.fullmatch(path)]
    assert matches, f"no route for {path}"
    if method is not None:
        assert method in matches or "*" in matches, f"{method} {path}: only {matches}"


def test_the_docs_name_the_delete_endpoint() -> None:
    assert ("DELETE", "/v1/images/x") in named_endpoints(README)
    assert isinstance(create_app(GatewaySettings()), web.Application)


def named_test_paths() -> set[str]:
    """``tests/...`` paths the README and docs/ name (globs such as ``test_amqp_*.py`` too)."""
    texts = [README, *(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))]
    found: set[str] = set()
    for text in texts:
        for m in re.finditer(r"(?<![\w/])tests/[\w*./-]*\w/?", text):
            found.add(m.group(0))
    return found


def test_every_test_path_the_docs_name_exists() -> None:
    named = named_test_paths()
    assert "tests/integration/test_es_backend.py" in named, sorted(named)
    missing = sorted(p for p in named if not list(ROOT.glob(p.rstrip("/"))))
    assert not missing, f"the docs name test paths that do not exist: {missing}"
