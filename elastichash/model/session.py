"""onnxruntime adapter: execution providers, thread counts, one session per model.

Providers come from one ordered preference list (settings) intersected with what the installed
onnxruntime offers; every decision is logged. ``require_gpu`` turns "no CUDA here" into a
start-up failure instead of a silent, 20x slower CPU deployment.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from elastichash.errors import ElasticHashError
from elastichash.settings import ModelSettings

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider")


class ProviderUnavailable(ElasticHashError):
    """The execution providers the settings demand are not available here."""

    code = "provider_unavailable"


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def choose_providers(preferred: list[str], available: list[str], require_gpu: bool) -> list[str]:
    """The preference list, in order, restricted to what is available."""
    chosen = [p for p in preferred if p in available]
    if require_gpu and not any(p in GPU_PROVIDERS for p in chosen):
        raise ProviderUnavailable(
            f"require_gpu is set but no GPU provider is usable: preferred {preferred}, "
            f"available {available} (install onnxruntime-gpu with matching CUDA/cuDNN)"
        )
    if not chosen:
        raise ProviderUnavailable(
            f"none of the preferred execution providers {preferred} is available ({available})"
        )
    log.info(
        "execution providers: preferred %s, available %s, chosen %s", preferred, available, chosen
    )
    return chosen


def session_options(settings: ModelSettings) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # 0 lets onnxruntime use one thread per physical core; decode threads run beside it.
    opts.intra_op_num_threads = max(0, settings.intra_op_threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # Idle onnxruntime workers spin by default; beside the decode threads that steals the
    # very cores the decoders need, so let them sleep.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def create_session(path: Path, settings: ModelSettings) -> tuple[Any, list[str]]:
    """An InferenceSession and the providers it actually uses (checked, not assumed)."""
    import onnxruntime as ort

    providers = choose_providers(
        list(settings.providers), available_providers(), settings.require_gpu
    )
    session = ort.InferenceSession(
        os.fspath(path), sess_options=session_options(settings), providers=providers
    )
    used = list(session.get_providers())
    if settings.require_gpu and not any(p in GPU_PROVIDERS for p in used):
        # onnxruntime falls back to CPU when the CUDA libraries fail to load.
        raise ProviderUnavailable(f"require_gpu is set but the session runs on {used}")
    if used != providers:
        log.warning("onnxruntime dropped providers: asked %s, got %s", providers, used)
    log.info("model %s loaded on %s", path, used)
    return session, used
