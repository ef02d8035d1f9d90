"""ASCII Breakout's rules (gptrl/envs/breakout.py): bounces off walls, paddle and bricks, the brick reward and the
clear bonus, a lost ball, the episode's end, seeding, the spaces and both render modes."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from gptrl.envs import BREAKOUT, register
from gptrl.envs.breakout import BALL, BRICKS, EMPTY, PADDLE, STAY, AsciiBreakout, heuristic_action, landing

SMALL, FULL = "gptrl/AsciiBreakoutSmall-v0", "gptrl/AsciiBreakout-v0"


def game(env_id: str = SMALL, seed: int = 0) -> AsciiBreakout:
    env = AsciiBreakout(layout=BREAKOUT[env_id][0])
    env.reset(seed=seed)
    return env


def place(env: AsciiBreakout, r: int, c: int, dr: int, dc: int) -> None:
    """Put the ball at (r, c) moving (dr, dc)."""
    w = env.layout.cols
    env._grid[env.ball_r * w + env.ball_c] = EMPTY
    env.ball_r, env.ball_c, env.dr, env.dc = r, c, dr, dc
    env._grid[r * w + c] = BALL


def clear_bricks(env: AsciiBreakout, keep: int = 0) -> None:
    """Remove every brick but the first ``keep`` of the top row."""
    L, w = env.layout, env.layout.cols
    for r in range(L.brick_top, L.brick_top + L.brick_rows):
        start = 1 + (keep * L.brick_width if r == L.brick_top else 0)
        env._grid[r * w + start:r * w + w - 1] = bytes([EMPTY]) * (w - 1 - start)
    env.bricks = keep


def ball(obs: np.ndarray) -> tuple[int, int]:
    (r, c), = np.argwhere(obs == BALL)
    return int(r), int(c)


def test_registered_with_the_documented_grids_and_ceilings():
    register()
    for env_id, shape, ceiling, limit in ((FULL, (24, 81), 960.0, 10_000), (SMALL, (12, 27), 200.0, 2_000)):
        env = gym.make(env_id)
        assert env.observation_space == gym.spaces.Box(0, 127, shape, np.uint8)
        assert env.action_space == gym.spaces.Discrete(3)
        assert env.spec.max_episode_steps == limit
        assert env.unwrapped.layout.ceiling == ceiling
    full = BREAKOUT[FULL][0]
    assert (full.brick_rows, full.bricks_per_row) == (7, 13)
    obs, info = game(FULL)._view.copy(), game(FULL)._info()
    assert np.isin(obs, list(BRICKS)).sum() == 7 * 13 * 6 and info == {"lives": 5, "bricks": 91, "score": 0.0}


def test_gymnasium_env_checker_passes():
    check_env(AsciiBreakout(layout=BREAKOUT[SMALL][0]), skip_render_check=False)


def test_the_ball_bounces_off_the_side_walls():
    env = game()
    place(env, 7, 1, 1, -1)
    obs, *_ = env.step(STAY)
    assert ball(obs) == (8, 2) and env.dc == 1
    place(env, 7, env.layout.cols - 3, 1, 2)  # two columns a step: the wall two columns away flips it
    obs, *_ = env.step(STAY)
    assert ball(obs) == (8, env.layout.cols - 5) and env.dc == -2


def test_the_ball_bounces_off_the_top_wall():
    env = game()
    clear_bricks(env)
    place(env, 2, 10, -1, 1)
    obs, reward, *_ = env.step(STAY)
    assert ball(obs) == (3, 11) and env.dr == 1 and reward == 0


def test_the_paddle_bounces_the_ball_by_where_it_hits():
    env = game()
    L = env.layout
    row, lo = L.paddle_row - 1, env.paddle
    hi = lo + L.paddle_width - 1
    assert (lo, hi) == (11, 15)  # the small grid's paddle: centre 13, its outer quarter beyond 1.25 columns
    # (ball column, its column direction) -> the direction it leaves with: the side of the centre it hits (at
    # column + direction), two columns a step from the outer quarter; on the centre it keeps its direction; a ball
    # that reaches the paddle only at the column it moves to is caught too
    for c, dc, out in ((13, 1, 1), (13, -1, -1), (12, 1, 1), (14, -1, -1), (11, 1, -1), (12, -1, -2), (15, 1, 2),
                       (10, 1, -2), (16, -1, 2)):
        place(env, row, c, 1, dc)
        obs, reward, terminated, _, info = env.step(STAY)
        assert (env.dr, env.dc) == (-1, out) and info["lives"] == 5 and reward == 0 and not terminated, (c, dc)
        assert ball(obs) == (row - 1, c + out)
    assert np.flatnonzero(obs[L.paddle_row] == PADDLE).tolist() == list(range(lo, hi + 1))


def test_the_paddle_moves_one_column_and_stops_at_the_walls():
    env = game()
    lo = env.paddle
    obs, *_ = env.step(1)
    assert env.paddle == lo - 1 and obs[env.layout.paddle_row, lo - 1] == PADDLE
    for _ in range(40):
        place(env, 7, 12, 1, 1)  # keep the ball in play
        obs, *_ = env.step(2)
    assert env.paddle == env.layout.cols - 1 - env.layout.paddle_width
    assert obs[env.layout.paddle_row, -1] == ord("|")


def test_a_brick_hit_scores_10_removes_the_brick_and_bounces():
    env = game()
    L = env.layout
    below = L.brick_top + L.brick_rows  # the first row under the bricks
    place(env, below, 7, -1, 1)  # brick 1 (columns 6..10) of the lowest row is right above
    obs, reward, terminated, _, info = env.step(STAY)
    assert reward == 10 and not terminated and info["bricks"] == L.bricks - 1 and info["score"] == 10
    assert (obs[below - 1, 6:11] == EMPTY).all() and np.isin(obs[below - 1, 1:6], list(BRICKS)).all()
    assert env.dr == 1 and ball(obs) == (below + 1, 8)
    assert b"score 10" in obs[1].tobytes()


def test_a_diagonal_brick_is_hit_and_beside_ones_flip_the_column():
    env = game()
    L = env.layout
    below = L.brick_top + L.brick_rows
    clear_bricks(env)
    env._grid[(below - 1) * L.cols + 11:(below - 1) * L.cols + 16] = b"[###]"
    env.bricks = 1
    place(env, below, 10, -1, 1)  # above is empty; the diagonal target (below - 1, 11) is the brick
    _, reward, terminated, *_ = env.step(STAY)
    assert reward == 60 and terminated  # the last brick: 10 and the clear bonus of 50
    env = game()
    row = L.brick_top + 1
    clear_bricks(env)
    env._grid[row * L.cols + 11:row * L.cols + 16] = b"[###]"
    env.bricks = 1
    place(env, row, 10, 1, 1)  # the brick is beside the ball
    _, reward, terminated, *_ = env.step(STAY)
    assert reward == 60 and terminated and env.dc == -1


def test_a_missed_ball_costs_a_life_and_the_last_life_ends_the_episode():
    env = game()
    L = env.layout
    far = 1 if env.paddle > L.cols // 2 else L.cols - 2
    place(env, L.paddle_row - 1, far, 1, 1 if far == 1 else -1)
    obs, reward, terminated, truncated, info = env.step(STAY)
    assert info["lives"] == 4 and reward == 0 and not terminated and not truncated
    r, c = ball(obs)  # served again, from below the bricks over the paddle, moving down
    assert r == L.brick_top + L.brick_rows + 1 and env.paddle <= c < env.paddle + L.paddle_width and env.dr == 1
    assert b"lives 4" in obs[1].tobytes()
    env.lives = 1
    place(env, L.paddle_row - 1, far, 1, 1 if far == 1 else -1)
    obs, reward, terminated, truncated, info = env.step(STAY)
    assert terminated and info["lives"] == 0 and not (obs == BALL).any()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(STAY)


def test_clearing_every_brick_ends_the_episode_with_the_ceiling():
    register()
    env = gym.make(SMALL)
    obs, _ = env.reset(seed=0)
    total, terminated = 0.0, False
    for _ in range(2000):
        obs, reward, terminated, truncated, info = env.step(heuristic_action(obs))
        total += reward
        if terminated or truncated:
            break
    if info["bricks"] == 0:
        assert terminated and total == 200.0
    else:  # the heuristic lost every ball first: the episode ends on lives
        assert terminated and info["lives"] == 0 and total == 10 * (15 - info["bricks"])


def test_the_seed_determines_the_episode():
    register()

    def play(seed: int) -> tuple[list[bytes], list[float]]:
        env = gym.make(SMALL)
        obs, _ = env.reset(seed=seed)
        rng, frames, rewards = np.random.default_rng(7), [obs.tobytes()], []
        for _ in range(300):
            obs, reward, terminated, truncated, _ = env.step(int(rng.integers(3)))
            frames.append(obs.tobytes())
            rewards.append(reward)
            if terminated or truncated:
                break
        return frames, rewards

    assert play(3) == play(3)
    def serve(seed: int) -> tuple:  # where the ball starts and where it is a step later
        first, second = play(seed)[0][:2]
        return tuple(ball(np.frombuffer(f, np.uint8).reshape(12, 27)) for f in (first, second))

    assert len({serve(s) for s in range(10)}) > 4  # the seed draws the serve


def test_invalid_actions_and_render_modes_are_refused():
    env = game()
    with pytest.raises(ValueError, match="action must be 0"):
        env.step(3)
    with pytest.raises(ValueError, match="render_mode"):
        AsciiBreakout(render_mode="human")


def test_render_modes():
    register()
    env = gym.make(FULL, render_mode="ansi")
    obs, _ = env.reset(seed=1)
    text = env.render()
    assert text.splitlines() == [row.tobytes().decode() for row in obs]
    env = gym.make(FULL, render_mode="rgb_array")
    env.reset(seed=1)
    image = env.render()
    assert image.shape == (240, 486, 3) and image.dtype == np.uint8
    assert len(np.unique(image.reshape(-1, 3), axis=0)) >= 8  # walls, seven brick colours, paddle, ball, black


def test_the_planner_knows_where_the_ball_comes_down():
    """``landing`` predicts the column the ball reaches on the row above the paddle (bricks broken on the way
    included) from any state; the game played on with the paddle moving at random agrees: the paddle cannot change
    the ball's path before that row."""
    env = AsciiBreakout()
    env.reset(seed=4)
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):  # random play to reach varied states
        predicted = landing(env)
        twin = copy.deepcopy(env)
        while predicted is not None and not (twin.dr > 0 and twin.ball_r + 1 == twin.layout.paddle_row):
            twin.step(int(rng.integers(3)))
        if predicted is not None:
            assert (twin.ball_c, twin.dc) == predicted
            checked += 1
        _, _, terminated, _, _ = env.step(int(rng.integers(3)))
        if terminated:
            env.reset(seed=5)
    assert checked > 250


def test_the_planner_clears_the_small_board_and_beats_the_heuristic_on_the_full_one():
    from gptrl.training.breakout_anchors import bricks_cleared, scripted

    assert scripted("gptrl/AsciiBreakoutSmall-v0", "planner", 5)["return_mean"] == 200.0
    planner, heuristic = (scripted("gptrl/AsciiBreakout-v0", p, 4) for p in ("planner", "heuristic"))
    assert planner["return_mean"] > heuristic["return_mean"]
    assert [bricks_cleared(r, 91) for r in (0.0, 420.0, 960.0)] == [0, 42, 91]
