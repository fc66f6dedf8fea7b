"""Which model file a setting means: a built-in model by name, or any contract model by path.

The one place that knows the built-in models. Each is built from code (offline and
deterministically) into the models directory on first use, so "the default model" is
resolved here and nowhere else: encoder, standalone commands, the AMQP pipeline and the
Dockerfile all name a model and ask this module for its file.

When no model is named, an index that records one keeps it (codes of two models cannot be
compared), an index made before models were recorded holds codes of the descriptor model that
was the default then (``visual``), and a new index gets :data:`DEFAULT`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from elastichash.errors import ModelContractError
from elastichash.settings import ModelSettings, default_data_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    filename: str
    description: str
    build: Callable[[], bytes]


def _visual() -> bytes:
    from elastichash.model.default import build_model_bytes

    return build_model_bytes()


def _lite0() -> bytes:
    from elastichash.model.semantic import build_model_bytes

    return build_model_bytes()


def _lite0_int8() -> bytes:
    from elastichash.model.quantize import quantize_bytes
    from elastichash.model.semantic import build_model_bytes

    return quantize_bytes(build_model_bytes())


BUILTINS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel(
            "efficientnet-lite0",
            "efficientnet-lite0.onnx",
            "ImageNet-trained EfficientNet-Lite0, 256-bit PCA+ITQ head, class labels (semantic)",
            _lite0,
        ),
        BuiltinModel(
            "efficientnet-lite0-int8",
            "efficientnet-lite0-int8.onnx",
            "efficientnet-lite0 with INT8 convolutions (onnxruntime static quantisation, "
            "calibrated on generated images); for CPUs",
            _lite0_int8,
        ),
        BuiltinModel(
            "visual",
            "visual.onnx",
            "colour and gradient descriptor, no training (very fast; near duplicates)",
            _visual,
        ),
    )
}
DEFAULT = "efficientnet-lite0"
# What indexes made before the registry hold: codes of the descriptor model, then the default.
LEGACY = "visual"
# Metadata keys an embedded index uses to record its model (see index/store.py).
META_MODEL_NAME = "model_name"


def models_dir(settings: ModelSettings) -> Path:
    return settings.models_dir or default_data_dir() / "models"


def ensure_builtin(name: str, directory: Path) -> Path:
    """The built-in model's file under ``directory``, built first if it is absent."""
    from elastichash.model.default import atomic_write

    builtin = BUILTINS[name]
    target = directory / builtin.filename
    if not target.exists():
        log.info("model %s is absent: building %s (offline, no download)", name, target)
        atomic_write(target, builtin.build())
    return target


def resolve(model: str, directory: Path) -> Path:
    """A model name or path -> an existing ONNX file (built-in models are built on demand)."""
    if model in BUILTINS:
        return ensure_builtin(model, directory)
    path = Path(model).expanduser()
    if path.is_file():
        return path
    raise ModelContractError(
        f"model {model!r} is neither a built-in model ({', '.join(sorted(BUILTINS))}) "
        "nor an existing ONNX file"
    )


def recorded_model(index_dir: Path | None) -> str | None:
    """The model name an embedded index recorded; LEGACY for an older index holding codes;
    None for no index or an empty one."""
    if index_dir is None:
        return None
    from elastichash.index.embedded import DB_NAME

    db = index_dir / DB_NAME
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30.0)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key=?", (META_MODEL_NAME,))
            found = row.fetchone()
            if found is not None:
                return str(found[0])
            has_docs = conn.execute("SELECT 1 FROM docs LIMIT 1").fetchone() is not None
        finally:
            conn.close()
    except sqlite3.Error as exc:
        log.warning("cannot read the model recorded in %s: %s", db, exc)
        return None
    return LEGACY if has_docs else None


def choose(settings: ModelSettings, index_dir: Path | None = None) -> str:
    """The model to use: the one named, else the index's, else the default."""
    if settings.model:
        return settings.model
    recorded = recorded_model(index_dir)
    if recorded is not None:
        if recorded == LEGACY:
            log.info("index %s predates model records: it holds %s codes", index_dir, LEGACY)
        return recorded
    return DEFAULT


def resolve_settings(settings: ModelSettings, index_dir: Path | None = None) -> Path:
    return resolve(choose(settings, index_dir), models_dir(settings))
