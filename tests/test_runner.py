"""The rollout contract beyond the traces, and one test per kind of bad input."""

import numpy as np
import pytest

import gptrl
from conftest import FIXTURES, load_trace

LLAMA = FIXTURES / "llama-hopper-single" / "bundle"
GPT2 = FIXTURES / "gpt2-hopper-single" / "bundle"


@pytest.fixture(scope="module")
def obs():
    return load_trace("llama-hopper-single").observations[:, 0]  # [N, 11] real Hopper states


def test_act_before_reset_is_refused(obs):
    runner = gptrl.load_runner(LLAMA)
    with pytest.raises(RuntimeError, match=r"act\(\)/observe\(\) called before reset\(\)"):
        runner.act(obs[0])


def test_observation_of_the_wrong_shape(obs):
    runner = gptrl.load_runner(LLAMA)
    with pytest.raises(ValueError, match=r"observation has shape \(10,\), expected \(11,\) or \(1, 11\)"):
        runner.reset(obs[0, :10])
    runner.reset(obs[0])
    with pytest.raises(ValueError, match=r"observation has shape \(2, 11\), expected \(11,\) or \(1, 11\)"):
        runner.act(obs[:2])
    batch = gptrl.load_runner(LLAMA, num_envs=3)
    with pytest.raises(ValueError, match=r"observation has shape \(11,\), expected \(3, 11\) for num_envs=3"):
        batch.reset(obs[0])


def test_non_finite_observation(obs):
    runner = gptrl.load_runner(LLAMA, num_envs=2)
    bad = np.stack([obs[0], obs[1]])
    bad[1, 4] = np.nan
    with pytest.raises(ValueError, match=r"observation holds non-finite values \(NaN or inf\) in rows \[1\]"):
        runner.reset(bad)
    runner.reset(np.stack([obs[0], obs[1]]))
    bad[1, 4] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        runner.act(bad)


def test_done_mask_of_the_wrong_length(obs):
    runner = gptrl.load_runner(LLAMA, num_envs=3)
    runner.reset(np.stack([obs[0]] * 3))
    with pytest.raises(ValueError, match=r"done_mask has shape \(2,\), expected \(3,\)"):
        runner.reset_rows([True, False])
    with pytest.raises(ValueError, match="booleans or 0/1"):
        runner.reset_rows([0, 2, 0])


def test_bad_input_leaves_the_runner_usable(obs):
    runner, clean = gptrl.load_runner(LLAMA), gptrl.load_runner(LLAMA)
    runner.reset(obs[0])
    clean.reset(obs[0])
    with pytest.raises(ValueError):
        runner.act(np.full(11, np.nan))
    for t in range(1, 12):
        np.testing.assert_array_equal(runner.act(obs[t]), clean.act(obs[t]))


def test_gpt2_refuses_a_cache_its_positions_cannot_serve():
    with pytest.raises(ValueError, match=r"kv_cache_max_len=16 cannot be served.*max_position_embeddings=16.*<= 15"):
        gptrl.load_runner(GPT2, kv_cache_max_len=16)
    assert gptrl.load_runner(GPT2, kv_cache_max_len=15).kv_cache_max_len == 15
    with pytest.raises(ValueError, match="kv_cache_max_len must be a positive integer"):
        gptrl.load_runner(LLAMA, kv_cache_max_len=0)
    with pytest.raises(ValueError, match="bos_cache_mode must be one of"):
        gptrl.load_runner(LLAMA, bos_cache_mode="keep")


def test_first_act_ignores_its_observation(obs):
    runner = gptrl.load_runner(LLAMA)
    runner.reset(obs[0])
    a0 = runner.act(obs[5])
    runner.reset(obs[0])
    np.testing.assert_array_equal(runner.act(obs[9]), a0)
    assert a0.shape == (3,) and a0.dtype == np.float32
    assert np.all(np.abs(a0) <= 1.0)


def test_retain_keeps_the_bos_entry(obs):
    discard, retain = gptrl.load_runner(LLAMA), gptrl.load_runner(LLAMA, bos_cache_mode="retain")
    for r in (discard, retain):
        r.reset(obs[0])
    np.testing.assert_array_equal(discard.act(obs[1]), retain.act(obs[1]))  # a0 comes from BOS alone
    assert np.abs(discard.act(obs[2]) - retain.act(obs[2])).max() > 1e-4
    assert (discard.state.written, retain.state.written) == (1, 2)


def test_act_with_info_shapes(obs):
    runner = gptrl.load_runner(LLAMA)
    runner.reset(obs[0])
    action, info = runner.act_with_info(obs[1])
    assert action.shape == (3,) and info["value"].shape == () and 0 < info["termination_prob"] < 1
    batch = gptrl.load_runner(LLAMA, num_envs=2)
    batch.reset(obs[:2])
    action, info = batch.act_with_info(obs[2:4])
    assert action.shape == (2, 3) and info["value"].shape == (2,) and info["termination_prob"].shape == (2,)


def test_observe_with_the_policys_action_equals_act(obs):
    a, b = gptrl.load_runner(LLAMA), gptrl.load_runner(LLAMA)
    a.reset(obs[0])
    b.reset(obs[0])
    for t in range(1, 15):
        action = a.act(obs[t])
        if t % 2:
            b.observe(obs[t], action)
        else:
            np.testing.assert_array_equal(b.act(obs[t]), action)


def test_observe_records_an_override(obs):
    a, b = gptrl.load_runner(LLAMA), gptrl.load_runner(LLAMA)
    a.reset(obs[0])
    b.reset(obs[0])
    a.act(obs[1])
    b.observe(obs[1], np.array([0.9, -0.9, 0.0], np.float32))
    assert np.abs(a.act(obs[2]) - b.act(obs[2])).max() > 1e-4  # the override entered the cache
    with pytest.raises(ValueError, match=r"action has shape \(2,\)"):
        b.observe(obs[3], np.zeros(2))


def test_batch_rows_equal_independent_runners(obs):
    """A batch whose rows reset together gives each row what a one-env runner gives."""
    starts = [0, 7, 20]
    batch = gptrl.load_runner(LLAMA, num_envs=3)
    singles = [gptrl.load_runner(LLAMA) for _ in starts]
    batch.reset(obs[starts])
    for r, s in zip(singles, starts):
        r.reset(obs[s])
    for t in range(1, 30):
        rows = obs[[s + t for s in starts]]
        expected = np.stack([r.act(o) for r, o in zip(singles, rows)])
        np.testing.assert_allclose(batch.act(rows), expected, atol=1e-5)


def test_reset_rows_starts_from_the_next_observation(obs):
    """A reset row's next act treats its observation as s0 and returns a0 from BOS alone."""
    batch = gptrl.load_runner(LLAMA, num_envs=2)
    batch.reset(obs[:2])
    for t in range(2, 6):
        batch.act(obs[t : t + 2])
    batch.reset_rows(np.array([False, True]))
    action = batch.act(obs[30:32])
    fresh = gptrl.load_runner(LLAMA)
    fresh.reset(obs[31])
    np.testing.assert_allclose(action[1], fresh.act(obs[0]), atol=1e-6)
