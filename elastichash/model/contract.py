"""The encoder model contract (ARCHITECTURE.md): what an ONNX file must declare to be used.

A model takes one float32 input ``(N, 3, S, S)`` (RGB, NCHW, dynamic batch axis) and gives a
``(N, 256)`` float output of pre-activations (bit = value > 0), optionally a ``(N, 64)``
``code64`` output, and optionally an ``(N, C)`` output of class scores with a labels file
naming the C classes (models without them still load). Its ``metadata_props`` say how to
preprocess and which 64 bits form the short code. Everything is checked when the model is
loaded; a broken model is refused with a message that names what is wrong.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elastichash import codes
from elastichash.errors import InvalidInput, ModelContractError

log = logging.getLogger(__name__)

CONTRACT_VERSION = "1"
# metadata_props keys
K_CONTRACT = "elastichash.contract"
K_NAME = "elastichash.name"
K_VERSION = "elastichash.version"
K_INPUT_SIZE = "elastichash.input_size"
K_RESIZE = "elastichash.resize"
K_NORMALIZE = "elastichash.normalize"  # "mean_std" (x/255 - mean) / std, or "raw" 0..255
K_MEAN = "elastichash.mean"
K_STD = "elastichash.std"
K_CODE_BITS = "elastichash.code_bits"
K_SHORT_BITS = "elastichash.short_bits"
K_CODE_OUTPUT = "elastichash.code_output"
K_SHORT_OUTPUT = "elastichash.short_output"
# optional: an (N, C) output of class scores (probabilities) and the file naming the classes,
# one per line, looked up beside the model file, then among the package's data files
K_LABELS_OUTPUT = "elastichash.labels_output"
K_LABELS_FILE = "elastichash.labels_file"

DEFAULT_CODE_OUTPUT = "code"
_FLOAT_TYPES = {1, 10, 11}  # onnx TensorProto FLOAT, FLOAT16, DOUBLE


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    sha256: str
    input_name: str
    input_size: int
    resize: int  # shorter side is resized to this, then centre-cropped to input_size
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    code_bits: int
    short_bits: tuple[int, ...] | None  # None: the model outputs code64 itself
    code_output: str
    short_output: str | None
    labels_output: str | None = None
    labels_file: str | None = None
    classes: int = 0  # width of the labels output

    @property
    def fingerprint(self) -> str:
        return f"{self.name}:{self.version}:{self.sha256[:12]}"

    def info(self) -> dict[str, Any]:
        """What the API reports about the model in use, the same in every mode."""
        return {
            "name": self.name,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "sha256": self.sha256[:16],
            "code_bits": self.code_bits,
            "input_size": self.input_size,
            "short_source": "model_output" if self.short_bits is None else "metadata",
            "labels": self.labels_output is not None,
        }

    def short_of(self, code: bytes) -> bytes:
        """The short code of a user-supplied long code (the model's own bit selection)."""
        arr = codes.as_array(code)
        if arr.shape != (codes.LONG_BYTES,):
            raise InvalidInput(
                f"a long code is {codes.LONG_BYTES} bytes, got {arr.shape[0]}", field="code"
            )
        if self.short_bits is None:
            raise InvalidInput(
                "this model computes its short code itself: give 'short' with the code",
                field="short",
            )
        return bytes(codes.select_bits(arr, self.short_bits).tobytes())


def _floats(text: str, key: str) -> tuple[float, float, float]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ModelContractError(
            f"metadata {key}={text!r} is not 3 comma-separated numbers"
        ) from None
    if len(vals) != 3:
        raise ModelContractError(f"metadata {key} must have 3 values (R,G,B), got {len(vals)}")
    return (vals[0], vals[1], vals[2])


def _int(meta: Mapping[str, str], key: str, default: int | None = None) -> int:
    if key not in meta:
        if default is not None:
            return default
        raise ModelContractError(f"metadata {key} is missing")
    try:
        return int(meta[key])
    except ValueError:
        raise ModelContractError(f"metadata {key}={meta[key]!r} is not an integer") from None


def parse_short_bits(text: str, code_bits: int = codes.LONG_BITS) -> tuple[int, ...]:
    try:
        bits = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ModelContractError(f"metadata {K_SHORT_BITS} is not a list of integers") from None
    check_short_bits(bits, code_bits)
    return bits


def check_short_bits(bits: tuple[int, ...], code_bits: int = codes.LONG_BITS) -> None:
    if len(bits) != codes.SHORT_BITS:
        raise ModelContractError(
            f"{K_SHORT_BITS} must list {codes.SHORT_BITS} positions, got {len(bits)}"
        )
    if len(set(bits)) != len(bits):
        dup = sorted({b for b in bits if bits.count(b) > 1})
        raise ModelContractError(f"{K_SHORT_BITS} repeats positions {dup}")
    bad = [b for b in bits if not 0 <= b < code_bits]
    if bad:
        raise ModelContractError(f"{K_SHORT_BITS} positions {bad} are outside 0..{code_bits - 1}")


def _dims(value_info: Any) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def spec_from_model(model: Any, sha256: str = "", *, require_short: bool = True) -> ModelSpec:
    """Check a loaded ``onnx.ModelProto`` against the contract and describe it.

    ``require_short=False`` accepts a model without short bits yet (for select-bits only).
    """
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get(K_CONTRACT) != CONTRACT_VERSION:
        raise ModelContractError(
            f"metadata {K_CONTRACT} must be {CONTRACT_VERSION!r}, got {meta.get(K_CONTRACT)!r}"
            " (see docs/MODEL.md for the contract fields)"
        )
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    if len(inputs) != 1:
        raise ModelContractError(f"model must have exactly 1 input, has {len(inputs)}")
    inp = inputs[0]
    if inp.type.tensor_type.elem_type != 1:
        raise ModelContractError(f"input {inp.name!r} must be float32")
    size = _int(meta, K_INPUT_SIZE)
    resize = _int(meta, K_RESIZE, default=size)
    if not 8 <= size <= 4096:
        raise ModelContractError(f"{K_INPUT_SIZE}={size} is outside 8..4096")
    if resize < size:
        raise ModelContractError(f"{K_RESIZE}={resize} must be >= {K_INPUT_SIZE}={size}")
    dims = _dims(inp)
    if len(dims) != 4 or dims[1] != 3 or dims[2] != size or dims[3] != size:
        raise ModelContractError(f"input {inp.name!r} must be (N, 3, {size}, {size}), got {dims}")
    if isinstance(dims[0], int) and dims[0] > 0:
        raise ModelContractError(f"input {inp.name!r} batch axis must be dynamic, got {dims[0]}")
    norm = meta.get(K_NORMALIZE, "mean_std")
    if norm == "raw":
        mean, std = (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255)
    elif norm == "mean_std":
        mean = _floats(meta.get(K_MEAN, ""), K_MEAN)
        std = _floats(meta.get(K_STD, ""), K_STD)
        if min(std) <= 0:
            raise ModelContractError(f"metadata {K_STD} must be positive, got {std}")
    else:
        raise ModelContractError(
            f"metadata {K_NORMALIZE} must be 'mean_std' or 'raw', got {norm!r}"
        )
    code_bits = _int(meta, K_CODE_BITS)
    if code_bits != codes.LONG_BITS:
        raise ModelContractError(f"{K_CODE_BITS} must be {codes.LONG_BITS}, got {code_bits}")
    outputs = {o.name: o for o in graph.output}
    code_out = meta.get(K_CODE_OUTPUT, DEFAULT_CODE_OUTPUT)
    if code_out not in outputs:
        raise ModelContractError(f"output {code_out!r} not found; outputs are {sorted(outputs)}")
    _check_output(outputs[code_out], code_bits)
    short_out = meta.get(K_SHORT_OUTPUT) or None
    short_bits: tuple[int, ...] | None = None
    if short_out is not None:
        if short_out not in outputs:
            raise ModelContractError(f"short output {short_out!r} not found in {sorted(outputs)}")
        _check_output(outputs[short_out], codes.SHORT_BITS)
    elif K_SHORT_BITS in meta:
        short_bits = parse_short_bits(meta[K_SHORT_BITS], code_bits)
    elif require_short:
        raise ModelContractError(
            f"metadata {K_SHORT_BITS} is missing (run `elastichash model select-bits`) and no "
            f"{K_SHORT_OUTPUT} output is declared"
        )
    labels_out = meta.get(K_LABELS_OUTPUT) or None
    labels_file = meta.get(K_LABELS_FILE) or None
    classes = 0
    if labels_out is not None:
        if labels_out not in outputs:
            raise ModelContractError(f"labels output {labels_out!r} not found in {sorted(outputs)}")
        if labels_file is None:
            raise ModelContractError(f"{K_LABELS_OUTPUT} is set but {K_LABELS_FILE} is missing")
        dims = _dims(outputs[labels_out])
        if len(dims) != 2 or not isinstance(dims[1], int) or dims[1] < 1:
            raise ModelContractError(f"labels output {labels_out!r} must be (N, C), got {dims}")
        classes = dims[1]
    return ModelSpec(
        name=meta.get(K_NAME, "unnamed"),
        version=meta.get(K_VERSION, "0"),
        sha256=sha256,
        input_name=inp.name,
        input_size=size,
        resize=resize,
        mean=mean,
        std=std,
        code_bits=code_bits,
        short_bits=short_bits,
        code_output=code_out,
        short_output=short_out,
        labels_output=labels_out,
        labels_file=labels_file,
        classes=classes,
    )


def _check_output(out: Any, nbits: int) -> None:
    if out.type.tensor_type.elem_type not in _FLOAT_TYPES:
        raise ModelContractError(f"output {out.name!r} must be a float tensor of pre-activations")
    dims = _dims(out)
    if len(dims) != 2 or dims[1] != nbits:
        raise ModelContractError(f"output {out.name!r} must be (N, {nbits}), got {dims}")


def load_spec(path: Path | str, *, require_short: bool = True) -> ModelSpec:
    """Read an ONNX file (without its weights in memory twice) and check the contract."""
    import onnx

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ModelContractError(f"cannot read model {p}: {exc.strerror}") from None
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelContractError(f"{p} is not an ONNX model: {exc}") from None
    return spec_from_model(model, hashlib.sha256(data).hexdigest(), require_short=require_short)


def contract_metadata(
    *,
    name: str,
    version: str,
    input_size: int,
    resize: int,
    mean: tuple[float, float, float] | None,
    std: tuple[float, float, float] | None,
    short_bits: tuple[int, ...] | None,
    code_output: str = DEFAULT_CODE_OUTPUT,
    labels_output: str | None = None,
    labels_file: str | None = None,
) -> dict[str, str]:
    """The metadata_props a model needs, in a fixed order (so files are reproducible)."""
    meta = {
        K_CONTRACT: CONTRACT_VERSION,
        K_NAME: name,
        K_VERSION: version,
        K_INPUT_SIZE: str(input_size),
        K_RESIZE: str(resize),
        K_NORMALIZE: "raw" if mean is None else "mean_std",
        K_CODE_BITS: str(codes.LONG_BITS),
        K_CODE_OUTPUT: code_output,
    }
    if mean is not None and std is not None:
        meta[K_MEAN] = ",".join(repr(float(v)) for v in mean)
        meta[K_STD] = ",".join(repr(float(v)) for v in std)
    if short_bits is not None:
        meta[K_SHORT_BITS] = ",".join(str(b) for b in short_bits)
    if labels_output is not None and labels_file is not None:
        meta[K_LABELS_OUTPUT] = labels_output
        meta[K_LABELS_FILE] = labels_file
    return meta


def set_metadata(model: Any, meta: Mapping[str, str]) -> None:
    """Replace the model's metadata_props with ``meta`` plus any foreign keys it had."""
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    for key, value in [*keep, *meta.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def model_bytes(graph: Any, meta: Mapping[str, str], *, version: str, opset: int = 17,
                ir_version: int = 8) -> bytes:
    """A built-in model's file: the graph with contract metadata, checked, serialised
    deterministically (the same bytes on every run)."""
    import onnx
    from onnx import helper

    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="elastichash",
        producer_version=version,
        ir_version=ir_version,
    )
    set_metadata(model, meta)
    onnx.checker.check_model(model, full_check=True)
    data: bytes = model.SerializeToString(deterministic=True)
    return data
