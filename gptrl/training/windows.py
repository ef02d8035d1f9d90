"""Training windows that reproduce exactly what the rollout's KV cache shows the policy.

In a rollout (bos_cache_mode "discard", kv = kv_cache_max_len) an episode of T steps is a run of T *slots*:
slot 0 is the BOS token (s_0, 0, 1), which predicts a_0 and is then dropped from the cache; slot i >= 1 is the
completed token (s_{i-1}, a_{i-1}, 0), which predicts a_i. Slot i >= 1 is written at position min(i - 1, kv)
and attends to the slots max(1, i - kv) .. i. The cached keys of those slots were computed from *their* windows,
so through N layers slot i depends on slots max(1, i - N * kv) .. i. A training window is L consecutive slots of
one episode with those positions and that mask; the loss counts only the slots whose whole receptive field lies
inside the window, so every counted prediction is exactly one the rollout makes from the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gptrl.training.datasets import Episode


@dataclass
class WindowBatch:
    states: np.ndarray  # [B, L, S] float32 (int64 tokens)
    actions: np.ndarray  # [B, L, *action] the action slot of each token (zeros for BOS), the action's dtype
    is_bos: np.ndarray  # [B, L] bool
    positions: np.ndarray  # [B, L] int64
    attn_mask: np.ndarray  # [B, L, L] bool, True = may attend
    targets: np.ndarray  # [B, L, *action] the expert's action for the step each slot predicts
    behaviour: np.ndarray  # [B, L, *action] the action the behaviour actor took at that step
    returns: np.ndarray  # [B, L] discounted return from that step
    loss_mask: np.ndarray  # [B, L] bool


def _dtype(array: np.ndarray) -> type:
    """Whole numbers stay int64 (tokens, Discrete actions); anything else is float32."""
    return np.int64 if array.dtype.kind in "iu" else np.float32


def cache_window(slot: np.ndarray, valid: np.ndarray, kv: int,
                 episode: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positions [W, L] and the attention mask [W, L, L] that a rollout's cache gives tokens at these episode slots:
    slot i at min(i - 1, kv) (the BOS at 0), attending to the valid slots max(1, i - kv) .. i (the BOS entry is
    discarded) of its own ``episode`` (where a window holds several; default one)."""
    positions = np.where(slot == 0, 0, np.minimum(slot - 1, kv)).astype(np.int64)
    si, sj = slot[:, :, None], slot[:, None, :]
    attn = (sj <= si) & (si - sj <= kv) & valid[:, None, :] & (sj != 0)
    if episode is not None:
        attn &= episode[:, :, None] == episode[:, None, :]
    attn |= np.eye(slot.shape[1], dtype=bool)[None]
    return positions, attn


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    out = np.zeros(len(rewards), dtype=np.float64)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + gamma * running
        out[t] = running
    return out.astype(np.float32)


class WindowSampler:
    """Samples windows of ``window`` slots uniformly over the predictions in a set of episodes."""

    def __init__(self, episodes: list[Episode], kv: int, window: int, num_layers: int, gamma: float = 0.99,
                 seed: int = 0):
        self.receptive = kv * num_layers
        if window <= self.receptive:
            raise ValueError(f"window ({window}) must exceed num_layers * kv ({self.receptive}) "
                             "so some slots see their whole receptive field")
        if not episodes:
            raise ValueError("no episodes to sample from")
        self.kv, self.window = kv, window
        self.rng = np.random.default_rng(seed)
        lengths = np.array([len(e.actions) for e in episodes])
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.lengths = lengths
        # Slot i of an episode: state s_{i-1} (s_0 for BOS), action slot a_{i-1} (zeros for BOS).
        self.states = np.concatenate([e.observations[np.maximum(np.arange(len(e.actions)) - 1, 0)] for e in episodes])
        self.actions = np.concatenate([np.concatenate([np.zeros_like(e.actions[:1]), e.actions[:-1]])
                                       for e in episodes])
        self.targets = np.concatenate([e.expert_actions for e in episodes])
        self.behaviour = np.concatenate([e.actions for e in episodes])
        self.returns = np.concatenate([discounted_returns(e.rewards, gamma) for e in episodes])
        # Window starts b in 0 .. max(0, T - R - 1) for the receptive field R; b = 0 is weighted up because only
        # it counts the first R slots.
        r = self.receptive
        starts, weights, ep_index = [], [], []
        for k, n in enumerate(lengths):
            b = np.arange(max(1, n - r))
            w = np.ones(len(b))
            w[0] = max(1, window - r)
            starts.append(b), weights.append(w), ep_index.append(np.full(len(b), k))
        self.start, self.episode = np.concatenate(starts), np.concatenate(ep_index)
        weights = np.concatenate(weights)
        self.p = weights / weights.sum()

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())

    def sample(self, batch_size: int) -> WindowBatch:
        pick = self.rng.choice(len(self.start), size=batch_size, p=self.p)
        return self.windows(self.episode[pick], self.start[pick])

    def windows(self, episode: np.ndarray, start: np.ndarray) -> WindowBatch:
        """The windows that begin at slot ``start[k]`` of episode ``episode[k]``."""
        kv, L = self.kv, self.window
        slot = start[:, None] + np.arange(L)[None, :]  # [B, L]
        valid = slot < self.lengths[episode][:, None]
        flat = self.offsets[episode][:, None] + np.minimum(slot, self.lengths[episode][:, None] - 1)
        is_bos = (slot == 0) & valid
        positions, attn = cache_window(slot, valid, kv)
        first_needed = np.maximum(1, slot - self.receptive)
        loss_mask = valid & ((slot == 0) | (first_needed >= start[:, None]))
        pad = lambda mask, like: mask.reshape(mask.shape + (1,) * (like.ndim - 1))  # [B, L] -> the array's rank
        states, actions = self.states[flat], self.actions[flat]
        return WindowBatch(
            states=np.where(pad(~valid, self.states), 0, states).astype(_dtype(states)),
            actions=np.where(pad(~valid | is_bos, self.actions), 0, actions).astype(_dtype(actions)),
            is_bos=is_bos,
            positions=positions,
            attn_mask=attn,
            targets=self.targets[flat],
            behaviour=self.behaviour[flat],
            returns=self.returns[flat],
            loss_mask=loss_mask,
        )
