"""The codecs' ops (``gptrl.bundle.codecs.ops``) as ONNX nodes: a graph builder runs each codec's one definition and
gets the same math as the torch model and the numpy runtime, in standard opset-18 ops every runtime has."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from gptrl.graph.builder import GraphBuilder

_LAST = [-1]


class GraphOps:
    def __init__(self, g: GraphBuilder):
        self.g = g

    def const(self, value: Any) -> str:
        return self.g.const(np.asarray(value, np.float32))

    def _op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        return self.g.op(op_type, *inputs, **attrs)  # type: ignore[return-value]

    def add(self, a, b):
        return self._op("Add", a, b)

    def sub(self, a, b):
        return self._op("Sub", a, b)

    def mul(self, a, b):
        return self._op("Mul", a, b)

    def div(self, a, b):
        return self._op("Div", a, b)

    def abs(self, a):
        return self._op("Abs", a)

    def exp(self, a):
        return self._op("Exp", a)

    def log(self, a):
        return self._op("Log", a)

    def sqrt(self, a):
        return self._op("Sqrt", a)

    def cos(self, a):
        return self._op("Cos", a)

    def tanh(self, a):
        return self._op("Tanh", a)

    def atanh(self, a):
        return self._op("Atanh", a)

    def clip(self, a, low, high):
        return self._op("Max", self._op("Min", a, high), low)  # Clip takes scalar bounds only; these may be vectors

    def less_equal(self, a, b):
        return self._op("LessOrEqual", a, b)

    def sum(self, a):
        return self._op("ReduceSum", a, self.g.const(_LAST, np.int64), keepdims=0)

    def matmul(self, a, b):
        return self._op("MatMul", a, b)

    def softmax(self, a):
        return self._op("Softmax", a, axis=-1)

    def log_softmax(self, a):
        return self._op("LogSoftmax", a, axis=-1)

    def argmax(self, a):
        return self._op("ArgMax", a, axis=-1, keepdims=0)

    def one_hot(self, index, n):
        hit = self._op("Equal", self._op("Unsqueeze", index, self.g.const(_LAST, np.int64)),
                       self.g.const(np.arange(n), np.int64))
        return self._op("Cast", hit, to=onnx.TensorProto.FLOAT)

    def to_float(self, a):
        return self._op("Cast", a, to=onnx.TensorProto.FLOAT)

    def slice(self, a, start, end):
        return self.g.slice_last(a, start, end)

    def concat(self, *arrays):
        return arrays[0] if len(arrays) == 1 else self._op("Concat", *arrays, axis=-1)

    def flatten_last2(self, a):
        return self._op("Reshape", a, self.g.const([0, -1], np.int64))  # [B, m, n] -> [B, m * n]

    def _index(self, index) -> str:
        return self.g.const(index, np.int64) if isinstance(index, np.ndarray) else index

    def take(self, table, index):
        return self._op("Gather", table, self._index(index), axis=0)

    def gather_last(self, a, index):
        return self._op("Gather", a, self._index(index), axis=-1)

    def merge_last2(self, a):
        lead = self._op("Slice", self._op("Shape", a), self.g.const([0], np.int64), self.g.const([-2], np.int64))
        return self._op("Reshape", a, self._op("Concat", lead, self.g.const([-1], np.int64), axis=0))

    def relu(self, a):
        return self._op("Relu", a)

    def mean_tokens(self, a):
        return self._op("ReduceMean", a, self.g.const([-2], np.int64), keepdims=0)

    def max_tokens(self, a):
        return self._op("ReduceMax", a, self.g.const([-2], np.int64), keepdims=0)
