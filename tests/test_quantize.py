"""gptrl export --quantize: MatMulNBits weights, checked on returns against fp32 before the file is kept."""

import json

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from gptrl.exporter import export_onnx
from gptrl.exporter.quantize import KEY_QUANTIZATION, QuantizationRefused
from gptrl.runtime import load_policy

BUNDLE = FIXTURES / "llama-hopper-single" / "bundle"


@pytest.mark.parametrize("scheme, bits", [("int8", 8), ("int4", 4)])
@pytest.mark.parametrize("variant", ["stateful", "attention"])
def test_quantized_export_records_what_it_checked(tmp_path, scheme, bits, variant):
    out = export_onnx(BUNDLE, tmp_path / "q.onnx", variant=variant, quantize=scheme, quantize_episodes=2,
                      allow_loss=True)
    model = onnx.load(out)
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 2 * 4  # qkv, o, gate_up, down in each of the 2 layers; input_proj and heads stay fp32
    assert all(next(a.i for a in n.attribute if a.name == "bits") == bits for n in nbits)
    assert all(next(a.i for a in n.attribute if a.name == "accuracy_level") == 4 for n in nbits)
    check = json.loads({p.key: p.value for p in model.metadata_props}[KEY_QUANTIZATION])
    assert check["scheme"] == scheme and check["env_id"] == "Hopper-v5" and check["seeds"] == [1000, 1001]
    assert check["loss_fraction"] == pytest.approx((check["fp32_return"] - check["quantized_return"])
                                                   / abs(check["fp32_return"]))
    policy = load_policy(out)  # sealed anew after quantization: loads
    obs = np.zeros(11, np.float32)
    policy.reset(obs)
    assert np.all(np.isfinite(policy.act(obs)))


def test_a_quantized_policy_that_loses_return_is_refused_and_nothing_is_written(tmp_path):
    target = export_onnx(BUNDLE, tmp_path / "q.onnx", variant="stateful")
    before = target.read_bytes()
    with pytest.raises(QuantizationRefused, match=r"int4 weights lose .* nothing was written"):
        export_onnx(BUNDLE, target, variant="stateful", quantize="int4", quantize_episodes=2,
                    quantize_max_loss=-1.0)  # any result counts as a loss here
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]
