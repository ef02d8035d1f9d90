"""The seed system's policy network (RL-driven nanoGPT, issue 23), written here from its description so gptrl can
measure it as an anchor: a nanoGPT of 6 layers, 6 heads, d 96 that reads the frame's 1944 characters as its
sequence every step (token and learned position embeddings, pre-LayerNorm causal blocks, a GELU MLP of 4 x d); the
last token's state feeds the policy logits and the value. It has no memory across frames.

``ppo_cost`` times what one PPO update at the seed's own settings costs on this machine (one env, a rollout of 1024
steps, 10 epochs of minibatches of 64 frames): the rollout's forward per frame and one minibatch's forward, backward
and Adam step, so a table can say what training it for a given budget would take.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["SEED_PPO", "SeedPolicy", "ppo_cost"]

# The seed's PPO settings (its description): one env, rollout 1024, 10 epochs, minibatch 64.
SEED_PPO = {"num_envs": 1, "rollout": 1024, "epochs": 10, "minibatch": 64}


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class SeedPolicy(nn.Module):
    """The seed's network: 1944 character tokens -> nanoGPT -> the last token -> policy logits and value."""

    def __init__(self, length: int = 1944, vocab: int = 128, d: int = 96, layers: int = 6, heads: int = 6,
                 actions: int = 3):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(length, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.policy, self.value = nn.Linear(d, actions), nn.Linear(d, 1)
        self.register_buffer("mask", torch.triu(torch.full((length, length), float("-inf")), 1))

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.tok(ids) + self.pos.weight[None]
        for block in self.blocks:
            x = block(x, self.mask)
        h = self.ln(x[:, -1])
        return self.policy(h), self.value(h)[:, 0]


@dataclass
class Cost:
    forward_s: float  # one frame's forward, batch 1, no gradient (the rollout)
    minibatch_s: float  # one minibatch's forward, backward and Adam step
    update_s: float  # one PPO update: the rollout's forwards and every epoch's minibatches
    steps_per_s: float  # env steps a second of training buys (the env's own time left out)

    def seconds_for(self, steps: int) -> float:
        return steps / self.steps_per_s


def ppo_cost(frames: np.ndarray, repeats: int = 3, threads: int = 1) -> Cost:
    """Time the seed's network on ``frames`` [n >= minibatch, 24, 81] (median of ``repeats``) and extrapolate one
    PPO update at ``SEED_PPO``'s settings."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = SeedPolicy(length=frames[0].size)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    ids = torch.from_numpy(frames.reshape(len(frames), -1).astype(np.int64))
    mb = SEED_PPO["minibatch"]
    forward, minibatch = [], []
    for _ in range(repeats):
        with torch.no_grad():
            start = time.perf_counter()
            model(ids[:1])
            forward.append(time.perf_counter() - start)
        start = time.perf_counter()
        logits, value = model(ids[:mb])
        loss = torch.distributions.Categorical(logits=logits).log_prob(torch.zeros(mb, dtype=torch.long)).mean() \
            + value.square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        minibatch.append(time.perf_counter() - start)
    f, m = float(np.median(forward)), float(np.median(minibatch))
    rollout = SEED_PPO["rollout"]
    update = rollout * f + SEED_PPO["epochs"] * (rollout // mb) * m
    return Cost(f, m, update, rollout / update)
