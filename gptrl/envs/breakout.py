"""ASCII Breakout: gptrl's own Breakout on a grid of characters, the game of the RL-driven nanoGPT system (issue 23).

The observation is the whole screen as a Box of uint8 character codes [rows, cols] (printable ASCII, so the token
vocabulary is 128); the actions are Discrete(3): 0 stay, 1 left, 2 right. The ball serves itself (no launch action).

The screen, top to bottom (``AsciiBreakout-v0``: 24 x 81; ``AsciiBreakoutSmall-v0``: 12 x 27)::

    +-------------------------------------------------------------------------------+   row 0: the top wall
    | score 0    lives 5                                                            |   row 1: the status line
    |                                                                               |   row 2: empty
    |[####][####][####][####][####][####][####][####][####][####][####][####][####] |   rows 3..9: 7 rows x 13
    |  ...                                                                          |     bricks, 6 columns each
    |                                          O                                    |   the ball
    |                                   =========                                   |   row 22: the paddle
    |                                                                               |   row 23: below the paddle

- Walls: ``|`` at columns 0 and cols - 1, ``-`` along row 0 (``+`` at its corners); the status line bounces the
  ball as the top wall does. There is no bottom wall: a ball the paddle misses is lost.
- Bricks: ``[####]`` (``[###]`` in the small grid: 3 rows of 5 bricks, 5 columns each, rows 3..5). In the full
  grid the 13 bricks fill columns 1..78; column 79 is a gap beside the right wall.
- Paddle: ``=`` (9 wide, 5 in the small grid) on row rows - 2; each step it moves one column left or right,
  stopping at the walls.
- Ball: ``O``. Each step it moves one row and one or two columns (``dc`` in -2, -1, 1, 2). Before it moves: a wall
  or brick beside it in its column direction (within the columns it crosses) flips the column direction; a brick
  above or below it, or the top wall (the status line counts as wall), flips the row direction; otherwise a brick
  on its diagonal target flips the row direction. Every brick touched so is destroyed. A ball about to move from
  the row above the paddle into the paddle row bounces when the paddle covers its column or the column it moves
  to, else it is lost. It leaves the paddle to the left when it hits left of the paddle's centre, to the right
  when right of it (keeping its direction on the centre), two columns a step when it hits the outer quarter of the
  paddle's width from the centre, else one. Where the target cell is still blocked after the flips, the ball
  waits one step.
- Why these speeds: a steep ball (two columns a step) outruns the paddle (one), so a player that only follows the
  ball's column loses balls, while one that predicts where the ball lands (which needs its direction, so more
  than one frame) has the whole flight to get there: the game rewards memory across frames.
- Serve: at reset and after each lost ball, the ball appears on the row below the bricks, over a column of the
  paddle drawn from the env's generator, moving down, one column a step left or right (also drawn). The paddle
  can always get there in time (the ball drifts one column a row, the paddle moves one a step), but only by
  moving: a serve is worth nothing unless it is caught. ``reset(seed=s)`` therefore determines every serve of the
  episode: the same seed and the same actions give the same episode.
- Rewards: 10 per brick, and 50 when the last brick goes, so the ceiling is 7 x 13 x 10 + 50 = **960** (the small
  grid: 3 x 5 x 10 + 50 = 200). Nothing else is rewarded or penalised.
- Lives: 5. Losing the last one ends the episode (terminated), as does clearing every brick. The time limit
  (truncation, gymnasium's TimeLimit from the registration) is 10,000 steps (2,000 for the small grid): a good
  player clears the board in far fewer, so the limit only ends games where the ball loops without hitting a brick.
- ``info``: ``lives``, ``bricks`` (bricks left), ``score``.
- ``render_mode``: "ansi" (the screen as text) or "rgb_array" (each character a block of ``CELL`` pixels coloured by
  its class: wall, brick by row, paddle, ball, status text; so ``gptrl record`` writes a GIF).

The game state lives in a ``bytearray`` that the observation array views, so a step is a few dozen byte reads and
writes in plain Python (benchmarks/ascii_breakout.py measures it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

__all__ = ["BREAKOUT", "AsciiBreakout", "Layout", "heuristic_action", "landing", "planner_action"]

EMPTY, WALL_SIDE, WALL_TOP, CORNER = ord(" "), ord("|"), ord("-"), ord("+")
BRICK_LEFT, BRICK, BRICK_RIGHT, PADDLE, BALL = ord("["), ord("#"), ord("]"), ord("="), ord("O")
BRICKS = frozenset((BRICK_LEFT, BRICK, BRICK_RIGHT))
STAY, LEFT, RIGHT = 0, 1, 2
BRICK_REWARD, CLEAR_BONUS = 10.0, 50.0
VOCAB = 128  # printable ASCII: the observation's values are below 128
CELL = (10, 6)  # the pixels of one character in rgb_array: height, width


@dataclass(frozen=True)
class Layout:
    """One board: its size, bricks, paddle and lives."""

    rows: int
    cols: int
    brick_rows: int
    bricks_per_row: int
    brick_width: int
    paddle_width: int
    paddle_speed: int = 1
    lives: int = 5
    brick_top: int = 3  # the first brick row (row 1 is the status line, row 2 empty)

    @property
    def paddle_row(self) -> int:
        return self.rows - 2

    @property
    def serve_row(self) -> int:
        return self.brick_top + self.brick_rows + 1

    @property
    def bricks(self) -> int:
        return self.brick_rows * self.bricks_per_row

    @property
    def ceiling(self) -> float:
        """The most an episode can score: every brick and the clear bonus."""
        return self.bricks * BRICK_REWARD + CLEAR_BONUS

    def check(self) -> None:
        inner = self.cols - 2
        if self.bricks_per_row * self.brick_width > inner or self.brick_width < 3:
            raise ValueError(f"{self.bricks_per_row} bricks of width {self.brick_width} (>= 3) do not fit "
                             f"{inner} columns")
        if self.brick_top + self.brick_rows >= self.paddle_row - 2 or not 1 <= self.paddle_width <= inner:
            raise ValueError(f"layout {self}: no room between the bricks and the paddle")


# id -> (layout, max_episode_steps)
BREAKOUT: dict[str, tuple[Layout, int]] = {
    "gptrl/AsciiBreakout-v0": (Layout(24, 81, 7, 13, 6, 9), 10_000),
    "gptrl/AsciiBreakoutSmall-v0": (Layout(12, 27, 3, 5, 5, 5), 2_000),
}


def _palette() -> np.ndarray:
    """RGB per character code: background black, walls grey, bricks by row (set per row in render), paddle, ball,
    other printable characters (the status text) dim grey."""
    colors = np.zeros((256, 3), np.uint8)
    colors[33:127] = (110, 110, 110)
    colors[[WALL_SIDE, WALL_TOP, CORNER]] = (170, 170, 170)
    colors[PADDLE] = (80, 160, 255)
    colors[BALL] = (255, 230, 60)
    return colors


BRICK_COLORS = np.array([(230, 60, 60), (240, 130, 40), (230, 200, 40), (80, 200, 80), (60, 180, 220),
                         (90, 90, 230), (180, 80, 220)], np.uint8)


class AsciiBreakout(gym.Env):
    """Breakout on a character grid; see the module docstring for the rules."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 30}

    def __init__(self, render_mode: str | None = None, layout: Layout = BREAKOUT["gptrl/AsciiBreakout-v0"][0]):
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got "
                             f"{render_mode!r}")
        layout.check()
        self.layout, self.render_mode = layout, render_mode
        self.observation_space = gym.spaces.Box(0, VOCAB - 1, (layout.rows, layout.cols), np.uint8)
        self.action_space = gym.spaces.Discrete(3)
        self.reward_range = (0.0, layout.ceiling)
        self._grid = bytearray(layout.rows * layout.cols)
        self._view = np.frombuffer(self._grid, np.uint8).reshape(layout.rows, layout.cols)
        self._started = False

    # -- the board ----------------------------------------------------------------------------------------------------
    def _draw_board(self) -> None:
        L, g, w = self.layout, self._grid, self.layout.cols
        g[:] = bytes([EMPTY]) * len(g)
        g[0:w] = bytes([CORNER]) + bytes([WALL_TOP]) * (w - 2) + bytes([CORNER])
        for r in range(1, L.rows):
            g[r * w] = g[r * w + w - 1] = WALL_SIDE
        brick = bytes([BRICK_LEFT]) + bytes([BRICK]) * (L.brick_width - 2) + bytes([BRICK_RIGHT])
        for r in range(L.brick_top, L.brick_top + L.brick_rows):
            for k in range(L.bricks_per_row):
                start = r * w + 1 + k * L.brick_width
                g[start:start + L.brick_width] = brick
        self._draw_status()

    def _draw_status(self) -> None:
        w = self.layout.cols
        text = f" score {int(self.score)}  lives {self.lives}".encode()[:w - 2].ljust(w - 2)
        self._grid[w + 1:2 * w - 1] = text

    def _draw_paddle(self, left: int, char: int) -> None:
        start = self.layout.paddle_row * self.layout.cols + left
        self._grid[start:start + self.layout.paddle_width] = bytes([char]) * self.layout.paddle_width

    def _serve(self) -> None:
        """The ball appears one row below the bricks over one of the paddle's columns, moving down one column a step
        left or right (column and direction drawn from the env's generator)."""
        L = self.layout
        self.ball_r = L.serve_row
        self.ball_c = self.paddle + int(self.np_random.integers(0, L.paddle_width))
        self.dr, self.dc = 1, (-1, 1)[int(self.np_random.integers(2))]
        self._grid[self.ball_r * L.cols + self.ball_c] = BALL

    def _hit(self, r: int, c: int) -> float:
        """Destroy the brick covering cell (r, c); its reward (with the clear bonus when it was the last)."""
        L = self.layout
        k = (c - 1) // L.brick_width
        start = r * L.cols + 1 + k * L.brick_width
        self._grid[start:start + L.brick_width] = bytes([EMPTY]) * L.brick_width
        self.bricks -= 1
        return BRICK_REWARD + (CLEAR_BONUS if self.bricks == 0 else 0.0)

    # -- gymnasium ----------------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        L = self.layout
        self.score, self.lives, self.bricks = 0.0, L.lives, L.bricks
        self._draw_board()
        self.paddle = (L.cols - L.paddle_width) // 2  # the paddle's leftmost column
        self._draw_paddle(self.paddle, PADDLE)
        self._serve()
        self._started = True
        return self._view.copy(), self._info()

    def _info(self) -> dict[str, Any]:
        return {"lives": self.lives, "bricks": self.bricks, "score": self.score}

    def step(self, action):
        if not self._started:
            raise RuntimeError("AsciiBreakout: call reset() before step()")
        a = int(action)
        if not 0 <= a <= 2:
            raise ValueError(f"AsciiBreakout: action must be 0 (stay), 1 (left) or 2 (right), got {action!r}")
        L, g, w = self.layout, self._grid, self.layout.cols
        if a != STAY:  # the paddle first
            left = min(max(self.paddle + (L.paddle_speed if a == RIGHT else -L.paddle_speed), 1),
                       w - 1 - L.paddle_width)
            if left != self.paddle:
                self._draw_paddle(self.paddle, EMPTY)
                self.paddle = left
                self._draw_paddle(left, PADDLE)
        reward, r, c, dr, dc = 0.0, self.ball_r, self.ball_c, self.dr, self.dc
        # The column direction: a wall or brick beside the ball (or, moving two columns a step, the one after) flips
        # it.
        step = 1 if dc > 0 else -1
        for k in range(step, dc + step, step):
            side = g[r * w + c + k]
            if side != EMPTY:
                if side in BRICKS:
                    reward += self._hit(r, c + k)
                dc = -dc
                break
        nr = r + dr
        lo, hi = self.paddle, self.paddle + L.paddle_width - 1
        lost = False
        if nr == L.paddle_row:  # the paddle bounces the ball or it is lost
            if lo <= c <= hi or lo <= c + dc <= hi:
                offset = (c + dc) - (lo + hi) / 2
                steep = 2 if abs(offset) > L.paddle_width / 4 else 1
                dr, dc = -1, (-steep if offset < 0 else steep if offset > 0 else (1 if dc > 0 else -1))
            else:
                lost = True
        elif nr <= 1:  # the top wall (the status line counts as wall)
            dr = -dr
        else:  # a brick above or below flips the row direction, else one on the diagonal
            ahead = g[nr * w + c]
            if ahead in BRICKS:
                reward += self._hit(nr, c)
                dr = -dr
            elif g[nr * w + c + dc] in BRICKS:
                reward += self._hit(nr, c + dc)
                dr = -dr
        g[r * w + c] = EMPTY
        if lost:
            self.lives -= 1
            if self.lives:
                self._serve()
        else:
            nr, nc = r + dr, c + dc
            if g[nr * w + nc] == EMPTY:
                r, c = nr, nc
            self.ball_r, self.ball_c, self.dr, self.dc = r, c, dr, dc
            g[r * w + c] = BALL
        terminated = self.lives == 0 or self.bricks == 0
        if reward or lost:
            self.score += reward
            self._draw_status()
        self._started = not terminated
        return self._view.copy(), reward, terminated, False, self._info()

    def render(self):
        if self.render_mode == "ansi":
            return "\n".join(row.tobytes().decode("ascii") for row in self._view) + "\n"
        if self.render_mode == "rgb_array":
            return self.rgb()
        return None

    def rgb(self) -> np.ndarray:
        """The screen as pixels [rows x 10, cols x 6, 3]: one block per character, coloured by its class (bricks
        by their row), with a one-pixel dark border around each block."""
        L = self.layout
        colors = _PALETTE[self._view]  # [rows, cols, 3]
        bricks = np.isin(self._view, tuple(BRICKS))
        by_row = BRICK_COLORS[(np.arange(L.rows) - L.brick_top) % len(BRICK_COLORS)]
        colors = np.where(bricks[..., None], by_row[:, None, :], colors)
        h, wd = CELL
        block = np.zeros((h, wd), np.uint8)
        block[1:-1, 1:-1] = 1
        image = colors[:, None, :, None, :] * block[None, :, None, :, None]
        return np.ascontiguousarray(image.reshape(L.rows * h, L.cols * wd, 3), np.uint8)


_PALETTE = _palette()


def heuristic_action(obs: np.ndarray, paddle_width: int | None = None) -> int:
    """The scripted anchor: move the paddle's centre towards the ball's column (stay when the ball is not on the
    screen or already above the centre). Reads only the observation."""
    obs = np.asarray(obs)
    ball = np.argwhere(obs == BALL)
    paddle = np.flatnonzero(obs[-2] == PADDLE)
    if not len(ball) or not len(paddle):
        return STAY
    centre = (paddle[0] + paddle[-1]) / 2
    target = ball[0][1]
    if target < centre - 0.5:
        return LEFT
    if target > centre + 0.5:
        return RIGHT
    return STAY


def landing(env: AsciiBreakout) -> tuple[int, int] | None:
    """Where the ball will stand on the row above the paddle, moving down: (column, column direction), found by
    stepping a copy of the game (bricks it breaks on the way included) with the paddle at rest, which cannot change
    the ball's path before that row. None when the board clears first or the ball does not come down in time."""
    sim = copy.copy(env)
    sim._grid = bytearray(env._grid)
    sim._view = np.frombuffer(sim._grid, np.uint8).reshape(env._view.shape)
    L = env.layout
    for _ in range(4 * L.rows * L.cols):
        if sim.dr > 0 and sim.ball_r + 1 == L.paddle_row:
            return sim.ball_c, sim.dc
        if sim.step(STAY)[2]:
            return None
    return None


def planner_action(env: AsciiBreakout) -> int:
    """The privileged teacher: it reads the game's state (not the screen), plans where the ball comes down and moves
    the paddle's centre under the column the ball enters the paddle row at, so the ball leaves on the centre, one
    column a step (never the steep two that outrun the paddle). PPO's ``--teacher breakout-planner`` distils it."""
    target = landing(env)
    column = env.ball_c if target is None else target[0] + target[1]
    centre = env.paddle + (env.layout.paddle_width - 1) / 2
    if column < centre - 0.5:
        return LEFT
    if column > centre + 0.5:
        return RIGHT
    return STAY


def make(layout: Layout, render_mode: str | None = None) -> AsciiBreakout:
    """The registered entry point (gymnasium adds its wrappers and the time limit)."""
    return AsciiBreakout(render_mode=render_mode, layout=layout)
