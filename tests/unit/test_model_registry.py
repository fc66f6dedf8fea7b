"""The model registry: a name or a path, and what an unnamed model means for a data dir."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from elastichash.errors import ModelContractError
from elastichash.index.base import Document
from elastichash.index.embedded import EmbeddedIndex
from elastichash.model import registry
from elastichash.settings import ModelSettings


def test_an_unknown_name_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError,
                       match=r"efficientnet-lite0, efficientnet-lite0-int8, visual"):
        registry.resolve("resnet-9000", tmp_path)


def test_a_path_is_used_as_it_is(tmp_path: Path) -> None:
    model = tmp_path / "mine.onnx"
    model.write_bytes(b"x")
    assert registry.resolve(str(model), tmp_path / "models") == model


def test_builtins_are_built_on_first_use_into_the_models_dir(tmp_path: Path) -> None:
    path = registry.resolve("visual", tmp_path)
    assert path == tmp_path / "visual.onnx"
    first = path.stat().st_mtime_ns
    assert registry.resolve("visual", tmp_path).stat().st_mtime_ns == first  # not rebuilt


def test_ModelSettings_accepts_the_older_path_spelling(tmp_path: Path) -> None:
    assert ModelSettings(path=tmp_path / "m.onnx").model == str(tmp_path / "m.onnx")
    assert ModelSettings().model == ""


def _index_with_one_doc(root: Path) -> None:
    async def go() -> None:
        index = EmbeddedIndex(root)
        await index.open()
        try:
            await index.upsert([Document("a", bytes(32), bytes(8))])
        finally:
            await index.close()

    asyncio.run(go())


def test_an_index_from_before_model_records_keeps_the_visual_model(tmp_path: Path) -> None:
    _index_with_one_doc(tmp_path / "index")
    assert registry.choose(ModelSettings(), tmp_path / "index") == "visual"


def test_a_new_data_directory_gets_the_default_and_a_named_model_wins(tmp_path: Path) -> None:
    assert registry.choose(ModelSettings(), tmp_path / "index") == registry.DEFAULT == (
        "efficientnet-lite0"
    )
    _index_with_one_doc(tmp_path / "index")
    assert registry.choose(ModelSettings(model="x.onnx"), tmp_path / "index") == "x.onnx"
