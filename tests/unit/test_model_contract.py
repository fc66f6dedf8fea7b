"""The model contract: the default model meets it, is reproducible, broken models are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from elastichash.errors import ModelContractError
from elastichash.model import contract, descriptor
from elastichash.model.contract import load_spec
from elastichash.model.default import build_default, constants, ensure_default_model


@pytest.fixture(scope="module")
def default_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "default.onnx"
    build_default(path)
    return path


def test_default_model_meets_the_contract(default_model: Path) -> None:
    spec = load_spec(default_model)
    assert spec.code_bits == 256
    assert spec.short_bits is not None
    assert len(set(spec.short_bits)) == 64
    assert spec.input_size == spec.resize == descriptor.INPUT_SIZE
    assert spec.fingerprint.startswith("elastichash-default:1:")


def test_build_default_writes_the_same_bytes_every_time(
    default_model: Path, tmp_path: Path
) -> None:
    constants.cache_clear()  # recompute everything, not just re-serialise
    again = tmp_path / "again.onnx"
    build_default(again)
    assert again.read_bytes() == default_model.read_bytes()


def test_ensure_default_model_builds_only_when_absent(default_model: Path, tmp_path: Path) -> None:
    target = tmp_path / "models" / "default.onnx"
    assert ensure_default_model(target) == target
    assert target.read_bytes() == default_model.read_bytes()
    target.write_bytes(b"user's own file")
    ensure_default_model(target)
    assert target.read_bytes() == b"user's own file"


def test_onnx_graph_matches_the_float64_reference(default_model: Path) -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(7)
    x = rng.random((3, 3, descriptor.INPUT_SIZE, descriptor.INPUT_SIZE))
    mean, proj, _ = constants()
    expected = (descriptor.features_np(x) - mean) @ proj
    sess = ort.InferenceSession(str(default_model), providers=["CPUExecutionProvider"])
    got = sess.run(["code"], {"image": x.astype(np.float32)})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_mirrored_images_get_the_same_code(default_model: Path) -> None:
    import onnxruntime as ort

    x = np.random.default_rng(3).random((2, 3, 128, 128)).astype(np.float32)
    sess = ort.InferenceSession(str(default_model), providers=["CPUExecutionProvider"])
    a = sess.run(["code"], {"image": x})[0]
    b = sess.run(["code"], {"image": np.ascontiguousarray(x[..., ::-1])})[0]
    np.testing.assert_allclose(a, b, atol=1e-4)


# --- refusals -----------------------------------------------------------------------------


def _tiny(
    *, dims: tuple[Any, ...] = ("N", 3, 32, 32), out_bits: int = 256, elem: int = TensorProto.FLOAT
) -> onnx.ModelProto:
    inp = helper.make_tensor_value_info("image", elem, list(dims))
    out = helper.make_tensor_value_info("code", TensorProto.FLOAT, ["N", out_bits])
    w = onnx.numpy_helper.from_array(np.ones((3 * 32 * 32, out_bits), np.float32), "w")
    shape = onnx.numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["image", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["code"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [inp], [out], initializer=[w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    contract.set_metadata(
        model,
        contract.contract_metadata(
            name="tiny",
            version="1",
            input_size=32,
            resize=36,
            mean=(0.5, 0.5, 0.5),
            std=(0.25, 0.25, 0.25),
            short_bits=tuple(range(64)),
        ),
    )
    return model


def _meta(**changes: str | None) -> Callable[[onnx.ModelProto], None]:
    def apply(model: onnx.ModelProto) -> None:
        meta = {p.key: p.value for p in model.metadata_props}
        for key, value in changes.items():
            full = f"elastichash.{key}"
            if value is None:
                meta.pop(full, None)
            else:
                meta[full] = value
        del model.metadata_props[:]
        contract.set_metadata(model, meta)

    return apply


def test_a_well_formed_model_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.onnx"
    onnx.save(_tiny(), path)
    spec = load_spec(path)
    assert (spec.input_size, spec.resize, spec.mean, spec.std) == (32, 36, (0.5,) * 3, (0.25,) * 3)
    assert spec.short_bits == tuple(range(64))


@pytest.mark.parametrize(
    ("model", "mutate", "message"),
    [
        (_tiny(), _meta(contract=None), "elastichash.contract must be '1'"),
        (_tiny(), _meta(short_bits=None), "short_bits is missing"),
        (_tiny(), _meta(short_bits=",".join(["3"] * 64)), r"repeats positions \[3\]"),
        (_tiny(), _meta(short_bits="1,2,3"), "must list 64 positions, got 3"),
        (_tiny(), _meta(short_bits=",".join(str(i) for i in range(200, 264))), "outside 0..255"),
        (_tiny(), _meta(code_bits="128"), "code_bits must be 256, got 128"),
        (_tiny(), _meta(input_size="34"), r"input 'image' must be \(N, 3, 34, 34\)"),
        (_tiny(), _meta(input_size="64"), "resize=36 must be >= elastichash.input_size=64"),
        (_tiny(), _meta(input_size="big"), "input_size='big' is not an integer"),
        (_tiny(), _meta(std="1,0,1"), "std must be positive"),
        (_tiny(), _meta(mean="1,2"), "must have 3 values"),
        (_tiny(), _meta(normalize="imagenet"), "must be 'mean_std' or 'raw'"),
        (_tiny(), _meta(code_output="bits"), "output 'bits' not found"),
        (_tiny(dims=(4, 3, 32, 32)), _meta(), "batch axis must be dynamic"),
        (_tiny(out_bits=128), _meta(), r"output 'code' must be \(N, 256\)"),
        (_tiny(elem=TensorProto.UINT8), _meta(), "must be float32"),
    ],
)
def test_broken_models_are_refused_naming_the_problem(
    tmp_path: Path, model: onnx.ModelProto, mutate: Callable[[onnx.ModelProto], None], message: str
) -> None:
    mutate(model)
    path = tmp_path / "bad.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelContractError, match=message):
        load_spec(path)


def test_a_file_that_is_not_onnx_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.onnx"
    path.write_bytes(b"\xff\xfenot a protobuf at all")
    with pytest.raises(ModelContractError, match="is not an ONNX model"):
        load_spec(path)
    with pytest.raises(ModelContractError, match="cannot read model"):
        load_spec(tmp_path / "missing.onnx")


def test_inspect_prints_the_contract_fields(default_model: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "elastichash.cli", "model", "inspect", str(default_model)],
        capture_output=True,
        text=True,
        check=True,
    )
    fields = json.loads(out.stdout)
    assert fields["code_bits"] == 256
    assert len(fields["short_bits"]) == 64
    assert fields["fingerprint"].startswith("elastichash-default")


def test_inspect_takes_a_built_in_models_name_and_refuses_an_unknown_one(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "ELASTICHASH_DATA": str(tmp_path)}
    cmd = [sys.executable, "-m", "elastichash.cli", "model", "inspect"]
    out = subprocess.run([*cmd, "visual"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    fields = json.loads(out.stdout)
    assert fields["code_bits"] == 256
    assert (tmp_path / "models").is_dir()  # built where the other commands build it
    bad = subprocess.run([*cmd, "no-such-model"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert bad.returncode == 1
    assert "neither a built-in model" in bad.stderr
    assert "Traceback" not in bad.stderr
