"""The few array operations the codecs are written in, so each codec's math is written once and runs on numpy (the
runtime), torch (the model and training: ``gptrl.exporter.torch_ops``) and as ONNX nodes (the graph builders:
``gptrl.graph.ops``). Every operation works on the last axis; a codec never branches on its backend.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

Array = Any  # a numpy array, a torch tensor or the name of an ONNX value


class Ops(Protocol):
    def const(self, value: Any) -> Array:
        """A float32 constant (numbers or a numpy array) in this backend."""

    def add(self, a: Array, b: Array) -> Array: ...
    def sub(self, a: Array, b: Array) -> Array: ...
    def mul(self, a: Array, b: Array) -> Array: ...
    def div(self, a: Array, b: Array) -> Array: ...
    def abs(self, a: Array) -> Array: ...
    def exp(self, a: Array) -> Array: ...
    def log(self, a: Array) -> Array: ...
    def sqrt(self, a: Array) -> Array: ...
    def cos(self, a: Array) -> Array: ...
    def tanh(self, a: Array) -> Array: ...
    def atanh(self, a: Array) -> Array: ...
    def clip(self, a: Array, low: Array, high: Array) -> Array: ...
    def less_equal(self, a: Array, b: Array) -> Array: ...
    def sum(self, a: Array) -> Array:
        """Sum over the last axis (dropped)."""

    def matmul(self, a: Array, b: Array) -> Array: ...
    def softmax(self, a: Array) -> Array: ...
    def log_softmax(self, a: Array) -> Array: ...
    def argmax(self, a: Array) -> Array:
        """int64 index of the first maximum over the last axis (dropped)."""

    def one_hot(self, index: Array, n: int) -> Array:
        """float32 [..., n] from int64 indices [...]."""

    def to_float(self, a: Array) -> Array: ...

    def slice(self, a: Array, start: int, end: int) -> Array:
        """a[..., start:end]."""

    def concat(self, *arrays: Array) -> Array: ...
    def flatten_last2(self, a: Array) -> Array:
        """[..., m, n] -> [..., m * n]."""

    # The grid observation's encoder (``codecs/grid.py``): an embedding lookup and a pooled patch projection.
    def take(self, table: Array, index: Array) -> Array:
        """table[index]: rows of a [n, k] table (a weight) by int64 indices [...] (an array, or a numpy constant)
        -> [..., k] (ONNX: Gather on axis 0)."""

    def gather_last(self, a: Array, index: np.ndarray) -> Array:
        """a[..., index] for a constant int64 numpy index of any shape (ONNX: Gather on the last axis)."""

    def merge_last2(self, a: Array) -> Array:
        """[..., m, n] -> [..., m * n] for inputs of any rank."""

    def relu(self, a: Array) -> Array: ...
    def mean_tokens(self, a: Array) -> Array:
        """Mean over the second-to-last axis (dropped): [..., n, k] -> [..., k]."""

    def max_tokens(self, a: Array) -> Array:
        """Maximum over the second-to-last axis (dropped): [..., n, k] -> [..., k]."""


class NumpyOps:
    """The codecs on numpy float32 arrays (the torch-free runtime, tests)."""

    def const(self, value: Any) -> np.ndarray:
        return np.asarray(value, np.float32)

    add, sub, mul, div = np.add, np.subtract, np.multiply, np.divide
    abs, exp, log, sqrt, cos, tanh, atanh = np.abs, np.exp, np.log, np.sqrt, np.cos, np.tanh, np.arctanh
    less_equal, matmul = np.less_equal, np.matmul

    def clip(self, a, low, high):
        return np.clip(a, low, high)

    def sum(self, a):
        return np.sum(a, axis=-1)

    def log_softmax(self, a):
        shifted = a - np.max(a, axis=-1, keepdims=True)
        return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))

    def softmax(self, a):
        return np.exp(self.log_softmax(a))

    def argmax(self, a):
        return np.argmax(a, axis=-1).astype(np.int64)

    def one_hot(self, index, n):
        return (np.asarray(index)[..., None] == np.arange(n)).astype(np.float32)

    def to_float(self, a):
        return np.asarray(a, np.float32)

    def slice(self, a, start, end):
        return a[..., start:end]

    def concat(self, *arrays):
        return np.concatenate(arrays, axis=-1)

    def flatten_last2(self, a):
        return a.reshape(*a.shape[:-2], -1)

    def take(self, table, index):
        return np.asarray(table)[np.asarray(index)]

    def gather_last(self, a, index):
        return np.asarray(a)[..., index]

    def merge_last2(self, a):
        return a.reshape(*a.shape[:-2], -1)

    def relu(self, a):
        return np.maximum(a, np.float32(0))

    def mean_tokens(self, a):
        return np.mean(a, axis=-2, dtype=np.float32)

    def max_tokens(self, a):
        return np.max(a, axis=-2)


NUMPY = NumpyOps()
