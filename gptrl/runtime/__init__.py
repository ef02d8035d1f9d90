"""The torch-free gptrl runtime: numpy + onnxruntime only.

    from gptrl.runtime import load_policy
    policy = load_policy("bundles/hopper-v5")      # a bundle folder with policy.onnx, or a .onnx file
    policy.reset(obs); action = policy.act(obs)

Nothing here imports torch (a test runs it with torch made unimportable).
"""

from gptrl.runtime.policy import OnnxPolicy, load_policy

__all__ = ["OnnxPolicy", "load_policy"]
