"""gptrl export --quantize: MatMulNBits weights, checked on returns against fp32 before the file is kept."""

import json

import numpy as np
import onnx
import pytest

import trajectory
from conftest import FIXTURES
from gptrl.evaluation import evaluate
from gptrl.exporter import export_onnx
from gptrl.exporter.quantize import KEY_QUANTIZATION, QuantizationRefused
from gptrl.runtime import load_policy

BUNDLE = FIXTURES / "llama-hopper-single" / "bundle"
MAX_ACTION_CHANGE = {"int8": 5e-3, "int4": 0.1}  # measured: 4.3e-4 and 1.5e-2 on hopper-v5's trajectory


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
    fp32 = export_onnx(BUNDLE, tmp_path / "fp32.onnx", variant=variant)
    # The record holds what the two graphs really score on its seeds (same machine, same batched path: exactly).
    for path, key in ((fp32, "fp32_return"), (out, "quantized_return")):
        got = evaluate("Hopper-v5", load_policy(path, num_envs=2), seeds=check["seeds"], num_envs=2)
        assert got.return_mean == pytest.approx(check[key], rel=1e-9), key
    assert (check["loss_fraction"] > 0) == (check["quantized_return"] < check["fp32_return"])
    # Step by step on fixed inputs the quantized weights move the actions, a little (int4 more than int8).
    traj = trajectory.load("hopper-v5")
    moved = float(np.abs(trajectory.play(load_policy(out), traj, [0]) - trajectory.play(load_policy(fp32), traj, [0])).max())
    assert 0 < moved < MAX_ACTION_CHANGE[scheme], moved


def test_a_quantized_policy_that_loses_return_is_refused_and_nothing_is_written(tmp_path):
    target = export_onnx(BUNDLE, tmp_path / "q.onnx", variant="stateful")
    before = target.read_bytes()
    with pytest.raises(QuantizationRefused, match=r"int4 weights lose .* nothing was written"):
        export_onnx(BUNDLE, target, variant="stateful", quantize="int4", quantize_episodes=2,
                    quantize_max_loss=-1.0)  # any result counts as a loss here
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]
