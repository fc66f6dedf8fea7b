"""The built-in semantic model, built once per test session (about 15 s, no download)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def semantic_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from elastichash.model.registry import ensure_builtin

    return ensure_builtin("efficientnet-lite0", tmp_path_factory.mktemp("semantic"))
