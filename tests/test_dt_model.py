"""gptrl's own Decision Transformer against Hugging Face's DecisionTransformerModel (a dev-only dependency)."""

import json

import numpy as np
import pytest
import torch

from gptrl.bundle.dt import parse_dt_config, required_dt_tensors
from gptrl.errors import BundleError
from gptrl.exporter.dt import DecisionTransformer

transformers = pytest.importorskip("transformers")  # dev extra; installed by make test


def _hf(**overrides):
    config = transformers.DecisionTransformerConfig(state_dim=11, act_dim=3, hidden_size=64, n_layer=3, n_head=2,
                                                    max_ep_len=1000, **overrides)
    torch.manual_seed(0)
    model = transformers.DecisionTransformerModel(config).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a wrong parameter would show
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return config, model


@pytest.mark.parametrize("overrides", [{}, {"activation_function": "gelu_new", "n_inner": 96},
                                       {"action_tanh": False}])
def test_forward_matches_transformers_with_left_padding(overrides):
    config, hf = _hf(**overrides)
    ours = DecisionTransformer(parse_dt_config(json.loads(config.to_json_string()), "config.json")).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    assert set(hf.state_dict()) == set(required_dt_tensors(ours.config))
    assert {k: tuple(v.shape) for k, v in hf.state_dict().items()} == required_dt_tensors(ours.config)
    rng = np.random.default_rng(0)
    b, t = 3, 20
    states = torch.tensor(rng.normal(size=(b, t, 11)), dtype=torch.float32)
    actions = torch.tensor(rng.uniform(-1, 1, size=(b, t, 3)), dtype=torch.float32)
    rtg = torch.tensor(rng.normal(size=(b, t, 1)), dtype=torch.float32)
    timesteps = torch.tensor(rng.integers(0, 1000, size=(b, t)))
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, :7] = 0  # left padding, as get_action makes it
    mask[2, :19] = 0
    with torch.no_grad():
        expected = hf(states=states, actions=actions, returns_to_go=rtg, timesteps=timesteps, attention_mask=mask,
                      return_dict=True)
        got = ours(states, actions, rtg, timesteps, mask)
    real = mask.bool()
    for name in ("state_preds", "action_preds", "return_preds"):
        diff = (getattr(got, name) - getattr(expected, name)).abs()[real].max().item()
        assert diff < 1e-5, (name, diff)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(model_type="gpt2"), "not a Decision Transformer config"),
    (lambda d: d.update(activation_function="mish"), "'activation_function' = 'mish' is not supported"),
    (lambda d: d.update(hidden_size=65), "must be divisible by 'n_head'"),
    (lambda d: d.update(n_layer=10**6), "exceeds gptrl's limit"),
    (lambda d: d.update(reorder_and_upcast_attn=True), "'reorder_and_upcast_attn' = true is not supported"),
])
def test_bad_dt_configs_are_refused(edit, message):
    config, _ = _hf()
    data = json.loads(config.to_json_string())
    edit(data)
    with pytest.raises(BundleError, match=message):
        parse_dt_config(data, "config.json")
