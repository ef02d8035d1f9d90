"""The masked-velocity envs gptrl registers observe exactly the kept entries of their base env."""

import gymnasium as gym
import numpy as np
import pytest

from gptrl.envs import MASKED, register


@pytest.mark.parametrize("env_id", sorted(MASKED))
def test_masked_env_keeps_the_base_entries(env_id):
    register()
    base_id, keep = MASKED[env_id]
    masked, base = gym.make(env_id), gym.make(base_id)
    assert masked.spec.max_episode_steps == base.spec.max_episode_steps
    assert masked.observation_space.shape == (len(keep),)
    o, _ = masked.reset(seed=3)
    full, _ = base.reset(seed=3)
    np.testing.assert_array_equal(o, full[list(keep)])
    for _ in range(20):
        a = base.action_space.sample()
        o, r, term, trunc, _ = masked.step(a)
        full, r_base, term_base, trunc_base, _ = base.step(a)
        np.testing.assert_array_equal(o, full[list(keep)])
        assert (r, term, trunc) == (r_base, term_base, trunc_base)
        if term or trunc:
            break


def test_register_twice_is_harmless():
    register()
    register()
    assert gym.make("CartPoleNoVel-v1").observation_space.shape == (2,)
