"""Record the trajectories that tests/test_trajectories.py replays: for each shipped bundle, the first STEPS steps of
its model card's first seeds, played in closed loop by the torch-free runtime on one env. Observations are rounded
to float32 before the policy sees them (as it would round them itself), so a replay feeds exactly what was fed.

Run again only when a bundle's weights change (the recorded actions are the runtime's, on the machine named in
each file's provenance):

    .venv/bin/python tests/record_trajectories.py [BUNDLE_NAME ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[1]
OUT = Path(__file__).parent / "data" / "trajectories"
STEPS = 150  # per episode: past every bundle's context (6 steps) and the DT's window (K = 20)


def card_episodes(bundle: Path) -> list[tuple[int, float | None]]:
    """(seed, target) of the card's first two measurements: seeds 0 and 1, or for a Decision Transformer seed 0 at
    its default target and seed 1 at the first target of its conditioning sweep."""
    card = json.loads((bundle / "eval.json").read_text())
    first = card["seeds"][0]
    if (bundle / "conditioning.json").is_file():
        sweep = json.loads((bundle / "conditioning.json").read_text())
        return [(first, float(card["target_return"])), (first + 1, float(sweep[0]["target"]))]
    return [(first, None), (first + 1, None)]


def record_episode(policy, env, seed: int, target: float | None) -> tuple[np.ndarray, ...]:
    obs, _ = env.reset(seed=seed)
    observations, rewards, actions, reward = [], [], [], None
    policy.reset(obs.astype(np.float32), **({"target_return": target} if target is not None else {}))
    for _ in range(STEPS):
        seen = obs.astype(np.float32)
        action = policy.act(seen, reward=reward) if target is not None else policy.act(seen)
        observations.append(seen.reshape(-1))  # flat, as the replay feeds it (a grid's frame is accepted flat)
        rewards.append(np.nan if reward is None else float(reward))
        actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    return np.array(observations), np.array(rewards), np.array(actions)


def record(bundle: Path) -> Path:
    from gptrl.evaluation import make_env
    from gptrl.fileio import sha256_file
    from gptrl.provenance import provenance
    from gptrl.runtime import load_policy

    policy = load_policy(bundle)
    env_id = json.loads((bundle / "eval.json").read_text())["env_id"]
    env = make_env(env_id)
    episodes = card_episodes(bundle)
    played = [record_episode(policy, env, seed, target) for seed, target in episodes]
    lengths = np.array([len(o) for o, _, _ in played])
    pad = lambda x: np.concatenate([x, np.zeros((STEPS - len(x), *x.shape[1:]), x.dtype)])
    meta = {"bundle": bundle.name, "env_id": env_id, "seeds": [s for s, _ in episodes],
            "targets": [t for _, t in episodes], "weights_sha256": sha256_file(bundle / "model.safetensors"),
            "provenance": provenance(policy)}
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{bundle.name}.npz"
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), lengths=lengths,
                        obs=np.stack([pad(o) for o, _, _ in played]),
                        rewards=np.stack([pad(r) for _, r, _ in played]),
                        actions=np.stack([pad(a) for _, _, a in played]))
    return path


def main(argv: list[str]) -> None:
    bundles = [ROOT / "bundles" / n for n in argv] or sorted(p.parent for p in (ROOT / "bundles").glob("*/eval.json"))
    for bundle in bundles:
        path = record(bundle)
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
