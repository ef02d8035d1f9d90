"""The torch-free gptrl runtime: numpy + onnxruntime only.

    from gptrl.runtime import load_policy
    policy = load_policy("bundles/hopper-v5")      # a bundle folder with policy.onnx, or a .onnx file
    policy.reset(obs); action = policy.act(obs)

It depends on the bundle format (``gptrl.bundle``), the rollout contract (``gptrl.rollout``) and the family registry
(``gptrl.families``). Nothing here imports torch (a test runs it with torch made unimportable).
"""

from gptrl.contract import Policy
from gptrl.runtime.policy import OnnxPolicy, load_policy

__all__ = ["OnnxPolicy", "Policy", "load_policy"]
