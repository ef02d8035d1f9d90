"""The codecs' ops (``gptrl.bundle.codecs.ops``) on torch tensors: the model, the reference runner and training
run each codec's one definition with autograd."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


class TorchOps:
    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def const(self, value: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(value, np.float32), device=self.device)

    add, sub, mul, div = (staticmethod(f) for f in (torch.add, torch.sub, torch.mul, torch.div))
    abs, exp, log, sqrt, cos = (staticmethod(f) for f in (torch.abs, torch.exp, torch.log, torch.sqrt, torch.cos))
    tanh, atanh, less_equal, matmul = (staticmethod(f) for f in (torch.tanh, torch.atanh, torch.le, torch.matmul))

    @staticmethod
    def clip(a, low, high):
        return torch.clamp(a, low, high)

    @staticmethod
    def sum(a):
        return a.sum(-1)

    @staticmethod
    def softmax(a):
        return torch.softmax(a, -1)

    @staticmethod
    def log_softmax(a):
        return torch.log_softmax(a, -1)

    @staticmethod
    def argmax(a):
        return a.argmax(-1)

    @staticmethod
    def one_hot(index, n):
        return F.one_hot(index.long(), n).float()

    @staticmethod
    def to_float(a):
        return a.float()

    @staticmethod
    def slice(a, start, end):
        return a[..., start:end]

    @staticmethod
    def concat(*arrays):
        return torch.cat(arrays, -1)

    @staticmethod
    def flatten_last2(a):
        return a.flatten(-2)

    def _index(self, index) -> torch.Tensor:
        return torch.as_tensor(index, device=self.device) if isinstance(index, np.ndarray) else index.long()

    def take(self, table, index):
        return F.embedding(self._index(index), table)

    def gather_last(self, a, index):
        return a[..., self._index(index)]

    @staticmethod
    def merge_last2(a):
        return a.flatten(-2)

    @staticmethod
    def relu(a):
        return torch.relu(a)

    @staticmethod
    def mean_tokens(a):
        return a.mean(-2)

    @staticmethod
    def max_tokens(a):
        return a.amax(-2)
