"""The shipped bundles: each policy.onnx is the export of the shipped weights, and the model card's
evaluation (eval.json, written by ``make card``) reproduces on its first seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptrl.bundle import load_bundle
from gptrl.exporter import verify_export
from gptrl.fileio import sha256_file

BUNDLES = sorted(p for p in (Path(__file__).parents[1] / "bundles").iterdir() if (p / "config.json").is_file())
CARDED = [p for p in BUNDLES if (p / "eval.json").is_file()]


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_shipped_policy_onnx_matches_the_shipped_weights(bundle):
    import onnx

    model = onnx.load(str(bundle / "policy.onnx"), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["gptrl.weights_sha256"] == sha256_file(bundle / "model.safetensors")
    assert verify_export(bundle / "policy.onnx", load_bundle(bundle)) < 1e-4


@pytest.mark.parametrize("bundle", CARDED, ids=lambda p: p.name)
def test_model_card_numbers_reproduce_on_the_first_seeds(bundle):
    from gptrl.evaluation import evaluate
    from gptrl.runtime import load_policy

    card = json.loads((bundle / "eval.json").read_text())
    assert card["num_episodes"] == 50 and card["seeds"] == [0, 49] and card["backend"] == "onnx"
    assert f"{card['return_mean']:.2f}" in (bundle / "README.md").read_text()
    policy = load_policy(bundle)
    got = evaluate(card["env_id"], policy, seeds=range(3))
    assert got["lengths"] == card["lengths"][:3]
    assert got["returns"] == pytest.approx(card["returns"][:3], rel=1e-4)
