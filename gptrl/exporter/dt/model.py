"""The Decision Transformer in plain torch, with Hugging Face ``DecisionTransformerModel``'s math and tensor names
(so its state dict loads the checkpoint as it is).

Three tokens per timestep, ordered (R_t, s_t, a_t): each is a linear embedding of its input plus the timestep
embedding, the stack goes through ``embed_ln`` and a GPT-2 trunk whose positions are all 0 (``wpe[0]`` on every
token, as transformers feeds ``position_ids`` of zeros), and the action is read from the hidden state at the state
token (``predict_action``: Linear, then Tanh with ``action_tanh``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptrl.bundle.dt import DTConfig
from gptrl.exporter.gpt2 import GPT2Block


@dataclass
class DTOutput:
    state_preds: Tensor  # [B, T, S]
    action_preds: Tensor  # [B, T, A]
    return_preds: Tensor  # [B, T, 1]


class DTEncoder(nn.Module):
    """Hugging Face's DecisionTransformerGPT2Model: a GPT-2 trunk fed with embeddings (``wte`` is never read)."""

    def __init__(self, c: DTConfig):
        super().__init__()
        self.config = c
        self.wte = nn.Embedding(c.vocab_size, c.hidden_size)
        self.wpe = nn.Embedding(c.n_positions, c.hidden_size)
        self.h = nn.ModuleList(GPT2Block(c.hidden_size, c.n_head, c.inner, c.activation_function, c.layer_norm_epsilon)
                               for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_epsilon)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [B, L, h] embeddings, mask [B, 1, L, L] bool (True = may attend) -> final hidden states [B, L, h]."""
        c, train = self.config, self.training
        x = F.dropout(x + self.wpe.weight[0], c.embd_pdrop, train)
        for block in self.h:
            q, k, v = block.attn.qkv(block.attn_in(x))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=c.attn_pdrop if train else 0.0)
            x = x + F.dropout(block.attn.out(y), c.resid_pdrop, train)
            x = x + F.dropout(block.mlp_out(x), c.resid_pdrop, train)
        return self.ln_f(x)


class DecisionTransformer(nn.Module):
    def __init__(self, config: DTConfig):
        super().__init__()
        c, h = config, config.hidden_size
        self.config = config
        self.encoder = DTEncoder(c)
        self.embed_timestep = nn.Embedding(c.max_ep_len, h)
        self.embed_return = nn.Linear(1, h)
        self.embed_state = nn.Linear(c.state_dim, h)
        self.embed_action = nn.Linear(c.act_dim, h)
        self.embed_ln = nn.LayerNorm(h, eps=1e-5)  # nn.LayerNorm's default, as in transformers
        self.predict_state = nn.Linear(h, c.state_dim)
        self.predict_action = nn.Sequential(nn.Linear(h, c.act_dim), *([nn.Tanh()] if c.action_tanh else []))
        self.predict_return = nn.Linear(h, 1)

    @property
    def num_layers(self) -> int:
        return self.config.n_layer

    def tokens(self, states: Tensor, actions: Tensor, returns_to_go: Tensor, timesteps: Tensor) -> Tensor:
        """[B, T, ...] inputs -> [B, 3T, h] embeddings ordered (R_1, s_1, a_1, R_2, ...), after embed_ln."""
        b, t = states.shape[:2]
        time = self.embed_timestep(timesteps)
        stacked = torch.stack((self.embed_return(returns_to_go) + time, self.embed_state(states) + time,
                               self.embed_action(actions) + time), dim=2)  # [B, T, 3, h]
        return self.embed_ln(stacked.reshape(b, 3 * t, -1))

    def forward(self, states: Tensor, actions: Tensor, returns_to_go: Tensor, timesteps: Tensor,
                attention_mask: Tensor | None = None) -> DTOutput:
        """states [B, T, S], actions [B, T, A], returns_to_go [B, T, 1], timesteps [B, T] int64, attention_mask
        [B, T] (1 = real step, 0 = padding), as ``DecisionTransformerModel.forward`` takes them."""
        b, t = states.shape[:2]
        x = self.tokens(states, actions, returns_to_go, timesteps)
        keep = torch.ones(b, t, dtype=torch.bool, device=x.device) if attention_mask is None else attention_mask.bool()
        keys = keep.repeat_interleave(3, dim=1)  # [B, 3T]
        causal = torch.ones(3 * t, 3 * t, dtype=torch.bool, device=x.device).tril()
        eye = torch.eye(3 * t, dtype=torch.bool, device=x.device)
        mask = ((causal[None] & keys[:, None, :]) | eye[None])[:, None]  # padding sees itself only: never NaN
        hidden = self.encoder(x, mask).reshape(b, t, 3, -1)
        return DTOutput(self.predict_state(hidden[:, :, 2]), self.predict_action(hidden[:, :, 1]),
                        self.predict_return(hidden[:, :, 2]))
