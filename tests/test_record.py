"""gptrl record: a few frames of a shipped bundle rendered offscreen (MUJOCO_GL=egl) to MP4 and GIF."""

from pathlib import Path

import imageio.v3 as iio
import pytest

HOPPER = Path(__file__).parent.parent / "bundles" / "hopper-v5"


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_records_a_short_episode(tmp_path, suffix):
    from gptrl.record import record_episode

    rec = record_episode(HOPPER, tmp_path / f"ep{suffix}", max_steps=6, every=2, width=64, height=48,
                         progress=False)
    assert rec.frames == 4 and rec.length == 6  # steps 0, 2, 4 and the final state
    frames = iio.imread(rec.path, index=None)
    assert frames.shape[0] == 4 and frames.shape[1:3] == (48, 64)
    assert frames.std() > 1.0  # a rendered scene, not a blank image
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"ep{suffix}"]  # written atomically


def test_cli_record_refuses_other_formats(tmp_path):
    from gptrl.cli import main

    assert main(["record", str(HOPPER), "-o", str(tmp_path / "ep.avi"), "--max-steps", "2"]) == 2
    assert not list(tmp_path.iterdir())


CARTPOLE = Path(__file__).parent.parent / "bundles" / "cartpole-v1"


def test_records_a_classic_control_policy_at_the_envs_own_size(tmp_path):
    from gptrl.record import record_episode

    rec = record_episode(CARTPOLE, tmp_path / "ep.gif", max_steps=9, every=4, width=64, height=48, progress=False)
    assert rec.frames == 4 and rec.length == 9  # steps 0, 4, 8 and the final state
    assert rec.size == (600, 400) and not rec.sized  # CartPole draws at 600x400 and takes no width or height
    frames = iio.imread(rec.path, index=None)
    assert frames.shape[:3] == (4, 400, 600) and frames.std() > 1.0


@pytest.mark.parametrize("env_id,size", [("CartPole-v1", (600, 400)), ("Acrobot-v1", (500, 500)),
                                         ("LunarLander-v3", (600, 400)), ("BipedalWalker-v3", (600, 400)),
                                         ("CartPoleNoVel-v1", (600, 400)), ("Hopper-v5", (64, 48))])
def test_render_envs_take_a_size_only_where_they_accept_one(env_id, size):
    from gptrl.envs import register
    from gptrl.record import make_render_env

    register()
    env, sized = make_render_env(env_id, 64, 48)
    try:
        env.reset(seed=0)
        frame = env.render()
    finally:
        env.close()
    assert (frame.shape[1], frame.shape[0]) == size and sized == (env_id == "Hopper-v5")
    assert frame.std() > 1.0


def test_cli_record_says_the_size_the_file_got(tmp_path, capsys):
    from gptrl.cli import main

    assert main(["record", str(CARTPOLE), "-o", str(tmp_path / "ep.gif"), "--max-steps", "3", "--width", "64"]) == 0
    assert "frames of 600x400 (the env renders at its own size" in capsys.readouterr().out
