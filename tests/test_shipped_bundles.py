"""The shipped bundles: each policy.onnx is the export of the shipped weights, the model card states what its
eval.json (written by ``make card`` / ``make dt-card``) holds and what produced it, and the Decision Transformer
bundle is still a Hugging Face checkpoint that transformers' own model runs to the same actions. That the card's
closed-loop numbers reproduce depends on the CPU and the versions: ``make verify-cards`` checks it and reports
per seed; tests/test_trajectories.py proves per-step exactness, which holds everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gptrl.bundle import load_bundle
from gptrl.bundle.dt import is_dt_folder, load_dt_bundle
from gptrl.exporter import verify_export
from gptrl.fileio import sha256_file

ROOT = Path(__file__).parents[1] / "bundles"
BUNDLES = sorted(p for p in ROOT.iterdir() if (p / "config.json").is_file())
CAUSAL = [p for p in BUNDLES if not is_dt_folder(p)]
DT = [p for p in BUNDLES if is_dt_folder(p)]
CARDED = [p for p in BUNDLES if (p / "eval.json").is_file()]


def _weights_sha(bundle: Path) -> str:
    import onnx

    model = onnx.load(str(bundle / "policy.onnx"), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}["gptrl.weights_sha256"]


def test_the_decision_transformer_bundle_is_shipped():
    assert [p.name for p in DT] == ["dt-hopper-v5"]


@pytest.mark.parametrize("bundle", CAUSAL, ids=lambda p: p.name)
def test_shipped_policy_onnx_matches_the_shipped_weights(bundle):
    assert _weights_sha(bundle) == sha256_file(bundle / "model.safetensors")
    assert verify_export(bundle / "policy.onnx", load_bundle(bundle)) < 1e-4


@pytest.mark.parametrize("bundle", DT, ids=lambda p: p.name)
def test_shipped_dt_policy_onnx_matches_the_shipped_weights(bundle):
    from gptrl.exporter.dt.export import verify_dt_export

    assert _weights_sha(bundle) == sha256_file(bundle / "model.safetensors")
    assert verify_dt_export(bundle / "policy.onnx", load_dt_bundle(bundle)) < 1e-4


def _states(card: dict, text: str) -> None:
    """The card's statistics are those of its episodes, and its README shows them with their provenance line."""
    from gptrl.provenance import summary

    assert card["num_episodes"] == len(card["returns"]) == len(card["lengths"]) == 50 and card["backend"] == "onnx"
    assert card["return_mean"] == pytest.approx(np.mean(card["returns"]), rel=1e-12)
    assert card["return_std"] == pytest.approx(np.std(card["returns"]), rel=1e-9)
    assert card["length_mean"] == pytest.approx(np.mean(card["lengths"]), rel=1e-12)
    assert f"{card['return_mean']:.2f} +- {card['return_std']:.2f}" in text
    assert card.get("provenance"), "every card made with `make card` records what measured it"
    assert f"Measured on: {summary(card['provenance'])}." in text


@pytest.mark.parametrize("bundle", CARDED, ids=lambda p: p.name)
def test_model_card_states_its_measurement_and_what_produced_it(bundle):
    card = json.loads((bundle / "eval.json").read_text())
    assert card["seeds"] == [0, 49] and card["command"].startswith(f"gptrl eval bundles/{bundle.name} --episodes 50")
    _states(card, (bundle / "README.md").read_text())


@pytest.mark.parametrize("bundle", DT, ids=lambda p: p.name)
def test_conditioning_table_states_each_rows_measurement(bundle):
    rows = json.loads((bundle / "conditioning.json").read_text())
    assert len(rows) >= 5 and [r["target"] for r in rows] == sorted(r["target"] for r in rows)
    card = (bundle / "README.md").read_text()
    for row in rows:
        assert f"| {row['target']:.0f} | {row['return_mean']:.2f} +- {row['return_std']:.2f} |" in card
        assert row["command"].endswith(f"--target-return {row['target']:g}") and row["provenance"]
        _states(row, card)


@pytest.mark.parametrize("bundle", DT, ids=lambda p: p.name)
def test_transformers_loads_the_shipped_dt_and_acts_as_the_runtime(bundle):
    """``DecisionTransformerModel.from_pretrained(bundle)`` with the post's get_action loop against the torch-free
    runtime, in closed loop on Hopper past the point where the window slides."""
    import gymnasium as gym

    transformers = pytest.importorskip("transformers")  # dev extra; installed by make test
    from dt_blog import BlogLoop

    from gptrl.runtime import load_policy

    side = load_dt_bundle(bundle).sidecar
    hf = transformers.DecisionTransformerModel.from_pretrained(bundle).eval()
    blog = BlogLoop(hf, np.array(side.state_mean, np.float32), np.array(side.state_std, np.float32), side.scale,
                    side.target_return, side.context_length)
    policy = load_policy(bundle)
    env = gym.make(side.env_id)
    obs, _ = env.reset(seed=0)
    policy.reset(obs)
    worst, reward = 0.0, None
    for _ in range(3 * side.context_length):
        expected = blog.act(obs, reward)
        worst = max(worst, float(np.abs(policy.act(obs, reward=reward) - expected).max()))
        obs, reward, terminated, truncated, _ = env.step(expected)
        assert not (terminated or truncated)
    assert worst < 1e-4, worst


def test_card_measurement_with_vector_envs_gives_the_one_env_returns():
    """The cards of the larger envs are measured with ``--num-envs``; the command without it must reproduce them."""
    from gptrl.training.model_card import measure

    one = measure(ROOT / "hopper-v5", episodes=2, seed=3)
    vec = measure(ROOT / "hopper-v5", episodes=2, seed=3, num_envs=2)
    assert vec["command"] == f"gptrl eval {ROOT / 'hopper-v5'} --episodes 2 --seed 3 --num-envs 2"
    assert vec["lengths"] == one["lengths"]
    assert vec["returns"] == pytest.approx(one["returns"], rel=1e-4)
