"""``gptrl record``: one episode of a policy, rendered offscreen (``rgb_array``: MuJoCo, set ``MUJOCO_GL=egl`` on a
machine without a display; classic control and Box2D draw with pygame on a surface, no display needed) and written as
an MP4 (imageio's ffmpeg) or a GIF, on the torch-free runtime by default.

The frame size: ``width`` and ``height`` are given to the env where its constructor takes them (MuJoCo); classic
control and Box2D envs draw at their own fixed size (CartPole 600x400, Acrobot 500x500, LunarLander and
BipedalWalker 600x400), which the recording reports (``Recording.size``) instead of failing.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path

from gptrl.bundle.files import POLICY_FILE, source_files
from gptrl.contract import conditioning
from gptrl.fileio import atomic_path, check_output

SUFFIXES = (".mp4", ".gif")  # either case: .MP4 is an MP4
MAX_FPS = 1000.0


@dataclass(frozen=True)
class Recording:
    path: Path
    frames: int
    episode_return: float
    length: int
    size: tuple[int, int] = (0, 0)  # (width, height) of the frames written
    sized: bool = True  # whether the env took the requested width and height (False: it renders at its own size)


def _check_settings(out: Path, every: int, max_steps: int, fps: float | None, width: int | None,
                    height: int | None) -> None:
    """Everything about the recording that is wrong without looking at the bundle, refused before any work."""
    if out.suffix.lower() not in SUFFIXES:
        raise ValueError(f"{out}: the output must end in {' or '.join(SUFFIXES)}")
    if every < 1 or max_steps < 1 or (width is not None and width < 16) or (height is not None and height < 16):
        raise ValueError("every and max_steps must be >= 1, width and height >= 16")
    if fps is not None and not (isinstance(fps, (int, float)) and not isinstance(fps, bool)
                                and math.isfinite(fps) and 0 < fps <= MAX_FPS):
        raise ValueError(f"fps must be a number in (0, {MAX_FPS}], got {fps!r}")


def _reads(bundle: Path) -> list[Path]:
    """What recording ``bundle`` reads: a bare graph, or the folder's sources and its policy.onnx."""
    return [*source_files(bundle), bundle / POLICY_FILE] if bundle.is_dir() else [bundle]


def _keywords(env_id: str) -> set[str] | None:
    """The keyword arguments the env's constructor names, None where it takes any (``**kwargs``). A masked env
    (``gptrl.envs``) passes its keywords on to the env it masks, so that env's are the answer."""
    import gymnasium as gym
    from gymnasium.envs.registration import load_env_creator

    from gptrl.envs import MASKED

    spec = gym.spec(MASKED[env_id][0] if env_id in MASKED else env_id)
    creator = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else spec.entry_point
    try:
        params = inspect.signature(creator).parameters.values()
    except (TypeError, ValueError):  # no signature to read: assume the common rgb_array-only constructor
        return {"render_mode"}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def make_render_env(env_id: str, width: int | None = None, height: int | None = None):
    """``gym.make(env_id, render_mode="rgb_array")`` with ``width`` and ``height`` where the env takes them (and the
    MuJoCo "track" camera, which follows the body, where it has one); returns (env, whether the size was given)."""
    import gymnasium as gym

    keywords = _keywords(env_id)
    size = {k: v for k, v in (("width", width), ("height", height)) if v is not None}
    sized = keywords is None or set(size) <= keywords
    kwargs = {"render_mode": "rgb_array", **(size if sized else {})}
    if keywords is None:
        try:  # the MuJoCo envs' "track" camera follows the body, so a fast policy stays in the picture
            return gym.make(env_id, **kwargs, camera_name="track"), sized
        except TypeError:  # envs without that option
            pass
    return gym.make(env_id, **kwargs), sized


def record_episode(bundle: str | Path, out: str | Path | None = None, *, seed: int = 0, backend: str = "onnx",
                   env_id: str | None = None, max_steps: int = 1000, every: int = 1, fps: float | None = None,
                   width: int | None = None, height: int | None = None, target_return: float | None = None,
                   progress: bool = True) -> Recording:
    """Play one episode (``seed``) and write every ``every``-th frame to ``out`` (default BUNDLE/episode.mp4).

    ``fps`` defaults to the env's own frame rate divided by ``every``, so the video plays in real time. ``width``
    and ``height`` (default: the env's own size, 480x480 for MuJoCo) reach envs that take them; the others render at
    their fixed size, and the result's ``size`` and ``sized`` say what the file got. Every setting, the output path
    and ``target_return`` are checked before the env starts or a progress bar opens.
    """
    import imageio.v2 as imageio

    out = Path(out) if out is not None else Path(bundle) / "episode.mp4"
    _check_settings(out, every, max_steps, fps, width, height)
    reads = _reads(Path(bundle))
    check_output(out, reads)
    if backend == "torch":
        from gptrl.exporter.load import load_runner

        runner = load_runner(bundle)
    elif backend == "onnx":
        from gptrl.runtime import load_policy

        runner = load_policy(bundle, providers="cpu")
    else:
        raise ValueError(f"backend must be 'onnx' or 'torch', got {backend!r}")
    conditioned = conditioning(runner, target_return)
    env_id = env_id or getattr(runner, "env_id", None) or getattr(getattr(runner, "config", None), "env_id", None)
    if not env_id:
        raise ValueError(f"{bundle}: the bundle records no env_id; pass env_id")
    from gptrl.envs import register

    register()
    env, sized = make_render_env(env_id, width, height)
    fps = fps or env.metadata.get("render_fps", 30) / every
    total, length, frames, reward, shape = 0.0, 0, 0, None, (0, 0)
    with atomic_path(out, reads=reads) as tmp:
        writer = imageio.get_writer(tmp, fps=fps) if out.suffix.lower() == ".mp4" else imageio.get_writer(
            tmp, mode="I", duration=1000.0 / fps, loop=0)
        steps = range(max_steps)
        if progress:  # opened once the output is open: an error before it is one line of its own
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc=f"record {env_id}", unit="step")
        try:
            obs, _ = env.reset(seed=seed)
            runner.reset(obs, target_return=target_return) if conditioned else runner.reset(obs)
            for t in steps:
                if t % every == 0:
                    frame = env.render()
                    shape = frame.shape[:2]
                    writer.append_data(frame)
                    frames += 1
                action = runner.act(obs, reward=reward) if conditioned else runner.act(obs)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                length += 1
                if terminated or truncated:
                    break
            writer.append_data(env.render())
            frames += 1
        finally:
            writer.close()
            env.close()
            if hasattr(steps, "close"):
                steps.close()
    return Recording(out, frames, total, length, (int(shape[1]), int(shape[0])), sized)
