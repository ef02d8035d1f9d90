"""A small ONNX graph builder: nodes named after where they sit, initializers from numpy, constants shared.

Inside ``with g.scope("layers.0"), g.scope("attn"):`` a MatMul is named ``/layers.0/attn/MatMul`` and its output
``/layers.0/attn/MatMul_output_0`` (the convention of torch's exporter and onnxruntime-genai's builder), so a
profile or a Netron view says which block each node belongs to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from gptrl.bundle.policy_graph import TensorSpec

_ONNX_TYPES = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64, "bool": onnx.TensorProto.BOOL}


class GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._scope: list[str] = []
        self._used: dict[str, int] = {}
        self._consts: dict[tuple, str] = {}

    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[None]:
        self._scope.append(name)
        try:
            yield
        finally:
            self._scope.pop()

    def _unique(self, base: str) -> str:
        n = self._used.get(base, 0)
        self._used[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def weight(self, name: str, array: np.ndarray, dtype=np.float32) -> str:
        """An initializer named ``<scope dotted>.<name>`` (e.g. ``layers.0.attn.qkv_proj.weight``)."""
        full = self._unique(".".join([*self._scope, name]))
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=dtype), full))
        return full

    def const(self, values, dtype=np.float32) -> str:
        """A small constant, shared by every node that uses the same value."""
        array = np.ascontiguousarray(values, dtype=dtype)  # a scalar becomes shape [1]: what the fused kernels expect
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            name = self._unique(f"/constants/{array.dtype.name}_{'x'.join(map(str, array.shape)) or 'scalar'}")
            self.initializers.append(numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    def op(self, op_type: str, *inputs: str, outputs: int | list[str] = 1, **attrs) -> str | list[str]:
        """Add one node; returns its output name (or names). ``outputs`` may name graph outputs explicitly."""
        name = self._unique("/" + "/".join([*self._scope, op_type]))
        names = outputs if isinstance(outputs, list) else [f"{name}_output_{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=name, **attrs))
        return names[0] if len(names) == 1 else names

    def linear(self, x: str, weight_in_out: np.ndarray, bias: np.ndarray | None, name: str) -> str:
        """x @ W (+ b), in scope ``name`` with initializers ``<name>.weight`` / ``<name>.bias``."""
        with self.scope(name):
            y = self.op("MatMul", x, self.weight("weight", weight_in_out))
            return self.op("Add", y, self.weight("bias", bias)) if bias is not None else y

    def slice_last(self, x: str, start: int, end: int) -> str:
        """x[..., start:end] (end may be INT64_MAX for "to the end")."""
        bounds = (self.const([start], np.int64), self.const([end], np.int64), self.const([-1], np.int64))
        return self.op("Slice", x, *bounds)

    def model(self, name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], opset: int,
              ir_version: int) -> onnx.ModelProto:
        def info(spec: TensorSpec) -> onnx.ValueInfoProto:
            return helper.make_tensor_value_info(spec.name, _ONNX_TYPES[spec.dtype], list(spec.shape))

        graph = helper.make_graph(self.nodes, name, [info(s) for s in inputs], [info(s) for s in outputs],
                                  self.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version,
                                 producer_name="gptrl")
