"""onnxruntime adapter: execution providers, thread counts, one session per model.

Providers come from one ordered preference list (settings) intersected with what the installed
onnxruntime offers; every decision is logged. ``require_gpu`` turns "no CUDA here" into a
start-up failure instead of a silent, 20x slower CPU deployment.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from elastichash import codes
from elastichash.errors import ElasticHashError, ModelContractError
from elastichash.model.contract import ModelSpec, load_spec
from elastichash.settings import ModelSettings

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

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


@dataclass(frozen=True)
class RawOutputs:
    """What one inference gives: pre-activations, and what else the model declares."""

    values: F32  # (N, code_bits) code pre-activations (bit = value > 0)
    short_values: F32 | None = None  # (N, 64) when the model outputs its short code itself
    scores: F32 | None = None  # (N, classes) when the model declares a labels output


class ModelSession:
    """One checked model and its onnxruntime session: the single inference path that
    encoding, bit selection and benchmarks share. Thread-safe (``InferenceSession.run`` is)."""

    def __init__(self, spec: ModelSpec, session: Any, providers: list[str]) -> None:
        self.spec = spec
        self.providers = providers
        self._session = session
        self._names = [spec.code_output]
        if spec.short_output:
            self._names.append(spec.short_output)
        if spec.labels_output:
            self._names.append(spec.labels_output)

    @classmethod
    def open(
        cls, path: Path, settings: ModelSettings, *, require_short: bool = True
    ) -> ModelSession:
        spec = load_spec(path, require_short=require_short)
        session, providers = create_session(path, settings)
        return cls(spec, session, providers)

    def run(self, batch: npt.NDArray[np.float32]) -> RawOutputs:
        """(N, 3, S, S) preprocessed images -> the model's outputs, shapes checked."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        outs = [np.asarray(o, dtype=np.float32) for o in
                self._session.run(self._names, {self.spec.input_name: x})]
        values = outs.pop(0)
        if values.shape != (len(x), self.spec.code_bits):
            raise ModelContractError(f"output {self._names[0]!r} has shape {values.shape}")
        short = outs.pop(0) if self.spec.short_output else None
        if short is not None and short.shape != (len(x), codes.SHORT_BITS):
            raise ModelContractError(f"short output has shape {short.shape}")
        scores = outs.pop(0) if self.spec.labels_output else None
        if scores is not None and (scores.ndim != 2 or len(scores) != len(x)):
            raise ModelContractError(f"labels output has shape {scores.shape}")
        return RawOutputs(values, short, scores)
