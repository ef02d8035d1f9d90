"""Our backbone against Hugging Face LlamaModel / GPT2Model with the same weights (dev-only dependency)."""

import pytest
import torch

from gptrl.bundle import make_config
from gptrl.exporter import PolicyModel, init_weights

transformers = pytest.importorskip("transformers")

B, T = 2, 12


def _policy(network: str) -> PolicyModel:
    config = make_config(
        state_dim=5, action_low=-2.0, action_high=[1.0, 2.0], network=network,
        num_layers=3, d_model=48, num_heads=4, context_length=16, rope_theta=500.0, intermediate_size=80,
    )
    model = init_weights(PolicyModel(config), seed=0).eval()
    with torch.no_grad():  # larger weights than the init so attention is far from uniform
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.mul_(10.0)
            elif "norm" in name or "ln_" in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    return model


def _hf_model(model: PolicyModel):
    m = model.config.model
    if m.network == "llama":
        cfg = transformers.LlamaConfig(
            vocab_size=1, hidden_size=m.d_model, intermediate_size=m.intermediate_size,
            num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads, num_key_value_heads=m.num_heads,
            rms_norm_eps=1e-6, max_position_embeddings=m.max_position_embeddings, hidden_act="silu",
            attention_bias=False, mlp_bias=False, rope_theta=m.rope_theta,
            rope_parameters={"rope_type": "default", "rope_theta": m.rope_theta},
        )
        hf = transformers.LlamaModel(cfg)
    else:
        cfg = transformers.GPT2Config(
            vocab_size=1, n_embd=m.d_model, n_layer=m.num_layers, n_head=m.num_heads,
            n_positions=m.max_position_embeddings, activation_function="gelu_new", layer_norm_epsilon=1e-5,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )
        hf = transformers.GPT2Model(cfg)
    ours = {k.removeprefix("backbone.net."): v for k, v in model.state_dict().items() if k.startswith("backbone.net.")}
    missing, unexpected = hf.load_state_dict(ours, strict=False)
    assert not unexpected
    assert all("rotary" in k or k.endswith("attn.bias") or k.endswith("masked_bias") for k in missing), missing
    hf.config._attn_implementation = "eager"
    return hf.eval()


def _inputs(model: PolicyModel):
    g = torch.Generator().manual_seed(2)
    c = model.config
    states = torch.randn(B, T, c.state_dim, generator=g) * 3
    low, high = model.action_low, model.action_high
    actions = low + (high - low) * torch.rand(B, T, c.action_dim, generator=g)
    is_bos = torch.zeros(B, T, dtype=torch.bool)
    is_bos[:, 0] = True
    return states, actions, is_bos


@pytest.mark.parametrize("network", ["llama", "gpt2"])
def test_sequence_forward_matches_transformers(network):
    model = _policy(network)
    hf = _hf_model(model)
    states, actions, is_bos = _inputs(model)
    with torch.no_grad():
        ours = model(states, actions, is_bos)
        hidden = hf(inputs_embeds=model.embed_tokens(states, actions, is_bos)).last_hidden_state
        theirs = model.heads(hidden)
    assert ours.mu.abs().max() > 0.1  # a non-trivial output
    torch.testing.assert_close(ours.mu, theirs.mu, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.value, theirs.value, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.termination_logit, theirs.termination_logit, atol=1e-5, rtol=0)


@pytest.mark.parametrize("network", ["llama", "gpt2"])
def test_cached_steps_match_transformers(network):
    """Step-by-step decoding with our KV cache equals Hugging Face's full causal pass."""
    model = _policy(network)
    hf = _hf_model(model)
    states, actions, is_bos = _inputs(model)
    with torch.no_grad():
        hidden = hf(inputs_embeds=model.embed_tokens(states, actions, is_bos)).last_hidden_state
        expected = model.heads(hidden)
        cache = model.empty_cache(B, 0)
        for t in range(T):
            out, new_kv = model.step(
                states[:, t], actions[:, t], is_bos[:, t], torch.full((B,), t), cache,
                torch.ones(B, t, dtype=torch.bool),
            )
            cache = [(torch.cat([k, nk], 2), torch.cat([v, nv], 2)) for (k, v), (nk, nv) in zip(cache, new_kv)]
            torch.testing.assert_close(out.mu, expected.mu[:, t], atol=1e-5, rtol=0)
            torch.testing.assert_close(out.value, expected.value[:, t], atol=1e-5, rtol=0)


def test_masked_cache_slots_are_ignored():
    """Garbage in slots marked invalid changes nothing (the runner relies on this for resets)."""
    model = _policy("llama")
    states, actions, is_bos = _inputs(model)
    with torch.no_grad():
        clean = model.step(states[:, 0], actions[:, 0], is_bos[:, 0], torch.zeros(B, dtype=torch.long), model.empty_cache(B, 0), torch.zeros(B, 0, dtype=torch.bool))[0]
        junk = [(torch.randn(B, 4, 5, 12) * 100, torch.randn(B, 4, 5, 12) * 100) for _ in range(3)]
        masked = model.step(states[:, 0], actions[:, 0], is_bos[:, 0], torch.zeros(B, dtype=torch.long), junk, torch.zeros(B, 5, dtype=torch.bool))[0]
    torch.testing.assert_close(clean.mu, masked.mu, atol=1e-6, rtol=0)
