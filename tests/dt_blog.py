"""The Hugging Face Decision Transformer post's inference loop, as published: the reference the DT tests compare
gptrl against (needs torch; transformers' model is passed in)."""

from __future__ import annotations

import numpy as np
import torch


def get_action(model, states, actions, rewards, returns_to_go, timesteps, K):
    """The post's get_action: the last K timesteps, left-padded with zeros and attention_mask 0."""
    states = states.reshape(1, -1, model.config.state_dim)[:, -K:]
    actions = actions.reshape(1, -1, model.config.act_dim)[:, -K:]
    returns_to_go = returns_to_go.reshape(1, -1, 1)[:, -K:]
    timesteps = timesteps.reshape(1, -1)[:, -K:]
    padding = K - states.shape[1]
    attention_mask = torch.cat([torch.zeros(padding), torch.ones(states.shape[1])]).to(dtype=torch.long).reshape(1, -1)
    states = torch.cat([torch.zeros((1, padding, model.config.state_dim)), states], dim=1).float()
    actions = torch.cat([torch.zeros((1, padding, model.config.act_dim)), actions], dim=1).float()
    returns_to_go = torch.cat([torch.zeros((1, padding, 1)), returns_to_go], dim=1).float()
    timesteps = torch.cat([torch.zeros((1, padding), dtype=torch.long), timesteps], dim=1)
    _, action_preds, _ = model(states=states, actions=actions, rewards=rewards, returns_to_go=returns_to_go,
                               timesteps=timesteps, attention_mask=attention_mask, return_dict=False)
    return action_preds[0, -1]


class BlogLoop:
    """The post's episode bookkeeping around get_action (histories, return-to-go, timesteps), one env."""

    def __init__(self, model, state_mean, state_std, scale: float, target: float, K: int):
        self.model, self.K, self.scale = model, K, scale
        self.mean, self.std = torch.as_tensor(state_mean), torch.as_tensor(state_std)
        self.target_return = torch.tensor(target / scale).reshape(1, 1)
        self.states = self.actions = self.rewards = self.timesteps = None

    def act(self, state: np.ndarray, reward: float | None) -> np.ndarray:
        """The action for ``state``; ``reward`` is the one the env returned with it (None on the first step)."""
        state = torch.from_numpy(np.asarray(state)).reshape(1, -1).float()
        if self.states is None:
            self.states, self.timesteps = state, torch.tensor(0).reshape(1, 1)
            self.actions, self.rewards = torch.zeros((0, self.model.config.act_dim)), torch.zeros(0)
        else:
            self.states = torch.cat([self.states, state], dim=0)
            self.rewards[-1] = reward
            rtg = (self.target_return[0, -1] - reward / self.scale).reshape(1, 1)
            self.target_return = torch.cat([self.target_return, rtg], dim=1)
            t = self.timesteps[0, -1] + 1
            self.timesteps = torch.cat([self.timesteps, torch.ones((1, 1), dtype=torch.long) * t], dim=1)
        self.actions = torch.cat([self.actions, torch.zeros((1, self.model.config.act_dim))], dim=0)
        self.rewards = torch.cat([self.rewards, torch.zeros(1)])
        with torch.no_grad():
            action = get_action(self.model, (self.states - self.mean) / self.std, self.actions, self.rewards,
                                self.target_return, self.timesteps, self.K)
        self.actions[-1] = action
        return action.numpy()
