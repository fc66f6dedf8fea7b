"""A small ONNX graph builder: nodes and initialisers under unique, stable names.

Names are sequential (``c1``, ``conv2``, ...), so the same build gives the same model bytes on
every machine. The descriptor model's graph (``descriptor.py``, ``default.py``) is built with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from onnx import NodeProto, TensorProto, helper, numpy_helper


class GraphBuilder:
    """Accumulates nodes and initialisers with unique, stable names."""

    def __init__(self) -> None:
        self.nodes: list[NodeProto] = []
        self.inits: list[TensorProto] = []
        self._n = 0

    def const(self, value: npt.ArrayLike, dtype: type = np.float32) -> str:
        self._n += 1
        name = f"c{self._n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        self._n += 1
        out = f"{op_type.lower()}{self._n}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out
