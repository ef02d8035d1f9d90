"""Ground truth: replaying every reference trace through our PolicyRunner."""

import numpy as np

import gptrl
from conftest import load_trace, replay


def test_replay_matches_reference(trace):
    runner = gptrl.load_runner(trace.bundle, num_envs=trace.num_envs, **trace.load_kwargs)
    action_err, term_err = replay(trace, runner)
    assert action_err < 1e-4, f"{trace.name}: max action error {action_err:.2e}"
    assert term_err < 1e-4, f"{trace.name}: max termination_prob error {term_err:.2e}"


def test_v1_sidecar_bundle_gives_the_same_actions_as_v2():
    v1, v2 = load_trace("llama-hopper-v1-single"), load_trace("llama-hopper-single")
    assert np.array_equal(v1.observations, v2.observations)
    r1, r2 = gptrl.load_runner(v1.bundle), gptrl.load_runner(v2.bundle)
    r1.reset(v1.observations[0, 0])
    r2.reset(v1.observations[0, 0])
    for t in range(1, 20):
        np.testing.assert_allclose(r1.act(v1.observations[t, 0]), r2.act(v1.observations[t, 0]), atol=1e-6)


def test_default_kv_differs_from_kv20_after_the_window():
    """The kv20 trace must not be reproducible with the default cache: the setting matters."""
    trace = load_trace("llama-hopper-kv20")
    runner = gptrl.load_runner(trace.bundle)  # default kv_cache_max_len = context_length 8
    action_err, _ = replay(trace, runner)
    assert action_err > 1e-3
