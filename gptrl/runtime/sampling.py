"""Whether a loaded causal graph can sample, one rule for the step and the stateful graphs: its metadata must say it
has the sampling inputs (a ``gptrl-policy-step/2`` graph) and its action head must describe a distribution."""

from __future__ import annotations

from gptrl.bundle.policy_graph import FORMAT_V1


class GraphSampling:
    """Mixed into the onnxruntime policies, which hold the graph's ``metadata`` and the bundle ``config``."""

    @property
    def stochastic(self) -> bool:
        return self.metadata.sampling and self.config.action.stochastic  # type: ignore[attr-defined]

    @property
    def deterministic_reason(self) -> str:
        return (f"a {FORMAT_V1} graph has no sampling inputs: re-export it with `gptrl export` to sample"
                if not self.metadata.sampling  # type: ignore[attr-defined]
                else "its head describes no distribution to sample from")
