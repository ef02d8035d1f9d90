"""The key/value ring of each step-graph variant, as the runtime owns it: its buffers, how they are bound, and what
a step writes. One class per variant, chosen once (``CACHES``); the policy never tests the variant's name.

The caches are never cleared on reset: slots a row may not see are masked out, and every value in them was written
by the graph (finite), so they contribute exactly zero.
"""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort

from gptrl.bundle.schema import ModelConfig
from gptrl.rollout import RolloutState
from gptrl.runtime.session import bind_array

log = logging.getLogger("gptrl.runtime")


class AttentionCache:
    """``attention``: a ring of kv + 1 slots the graph scatters the new token into (in place: present is bound to
    past's buffer), read under ``attn_mask``; on CUDA the ring stays on the GPU."""

    extra_slots = 1  # the new token is written before it attends

    def __init__(self, m: ModelConfig, num_envs: int, ring: int, on_gpu: bool):
        shape = (num_envs, m.num_heads, ring, m.head_dim)
        self.keys = [np.zeros(shape, np.float32) for _ in range(m.num_layers)]
        self.values = [np.zeros(shape, np.float32) for _ in range(m.num_layers)]
        self.inputs = {"write_index": np.zeros(num_envs, np.int64), "attn_mask": np.zeros((num_envs, ring), bool)}
        self.outputs: dict[str, np.ndarray] = {}
        self.on_gpu = on_gpu
        self._device: list[ort.OrtValue] = []

    def bind(self, io: ort.IOBinding) -> None:
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            for kind, array in (("key", k), ("value", v)):
                if self.on_gpu:
                    value = ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
                    self._device.append(value)
                    io.bind_ortvalue_input(f"past_{kind}.{i}", value)
                    io.bind_ortvalue_output(f"present_{kind}.{i}", value)
                else:
                    bind_array(io.bind_input, f"past_{kind}.{i}", array)
                    bind_array(io.bind_output, f"present_{kind}.{i}", array)

    def before(self, state: RolloutState) -> None:
        slot = state.slot
        self.inputs["write_index"][:] = slot
        mask = self.inputs["attn_mask"]
        mask[:] = state.valid
        mask[:, slot] = True  # the new token itself

    def after(self, slot: int) -> None:
        """Nothing: the graph wrote the ring."""


class PortableCache:
    """``portable``: a ring of kv slots in host memory (keys transposed); the graph returns the new token's key and
    value and the runtime writes them into the slot."""

    extra_slots = 0

    def __init__(self, m: ModelConfig, num_envs: int, ring: int, on_gpu: bool):
        B, H, hd = num_envs, m.num_heads, m.head_dim
        self.keys = [np.zeros((B, H, hd, ring), np.float32) for _ in range(m.num_layers)]
        self.values = [np.zeros((B, H, ring, hd), np.float32) for _ in range(m.num_layers)]
        self.inputs = {"past_valid": np.zeros((B, ring), bool)}
        self.outputs = {f"new_{kind}.{i}": np.zeros((B, H, hd), np.float32)
                        for i in range(m.num_layers) for kind in ("key", "value")}
        if on_gpu:
            log.warning("gptrl.runtime: the portable graph keeps its cache in host memory under CUDA; "
                        "export with the default (attention) variant to keep it on the GPU")

    def bind(self, io: ort.IOBinding) -> None:
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            bind_array(io.bind_input, f"past_key.{i}", k)
            bind_array(io.bind_input, f"past_value.{i}", v)

    def before(self, state: RolloutState) -> None:
        self.inputs["past_valid"][:] = state.valid

    def after(self, slot: int) -> None:
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            k[:, :, :, slot] = self.outputs[f"new_key.{i}"]
            v[:, :, slot, :] = self.outputs[f"new_value.{i}"]


CACHES: dict[str, type[AttentionCache] | type[PortableCache]] = {"attention": AttentionCache,
                                                                 "portable": PortableCache}
