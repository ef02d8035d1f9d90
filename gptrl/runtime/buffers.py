"""The state of a stateful graph (either family) in two preallocated buffer sets: two IOBindings point the graph
from one set to the other and a step swaps them, so nothing is allocated or copied per step for the state."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from gptrl.bundle.policy_graph import TensorSpec
from gptrl.runtime.session import bind_array


class StateBuffers:
    def __init__(self, session: ort.InferenceSession, specs: list[TensorSpec], num_envs: int,
                 inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]):
        """``specs``: the state tensors (without ``state_in.`` / ``state_out.``); ``inputs`` / ``outputs``: the
        graph's other buffers, bound in both bindings."""
        self.sets = [{t.name: np.zeros([num_envs, *t.shape[1:]], t.dtype) for t in specs} for _ in range(2)]
        self._bindings = [self._bind(session, inputs, outputs, self.sets[k], self.sets[1 - k]) for k in (0, 1)]
        self.current = 0  # which set the next step reads

    @staticmethod
    def _bind(session: ort.InferenceSession, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
              state_in: dict[str, np.ndarray], state_out: dict[str, np.ndarray]) -> ort.IOBinding:
        io = session.io_binding()
        for name, array in inputs.items():
            bind_array(io.bind_input, name, array)
        for name, array in outputs.items():
            bind_array(io.bind_output, name, array)
        for name, array in state_in.items():
            bind_array(io.bind_input, f"state_in.{name}", array)
        for name, array in state_out.items():
            bind_array(io.bind_output, f"state_out.{name}", array)
        return io

    @property
    def state_in(self) -> dict[str, np.ndarray]:
        """The state the next step reads."""
        return self.sets[self.current]

    @property
    def state_out(self) -> dict[str, np.ndarray]:
        """The state the next step writes."""
        return self.sets[1 - self.current]

    def run(self, session: ort.InferenceSession) -> None:
        """One step; the state is not advanced until :meth:`advance` (a refused output leaves it as it was)."""
        session.run_with_iobinding(self._bindings[self.current])

    def advance(self) -> None:
        self.current = 1 - self.current
