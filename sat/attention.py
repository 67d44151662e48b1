"""Attention over the annotation grid: f_att and φ of Xu et al. 2015, §4.

Every attention kind implements the same calls, so any recurrent decoder can use any kind:

    keys = attn.prepare(feats)                          # once per image: (B, L, D) → (B, L, A)
    context, alpha, logp = attn(feats, keys, query)     # every step: (B, D), (B, L), (B,) or None
    extra, stats = attn.regularizer(alphas, sample_logp, token_logp, mask, alpha_c=λ)  # in the loss

`prepare` is where the per-image projection of the annotation vectors happens (W_a a_i), so a
step only projects the query: the projection of all L vectors is not recomputed T times.
`logp` is the log-probability of a *sampled* location (hard attention while training), else None.

- soft (§4.2), additive:  e_ti = wᵀ tanh(W_a a_i + W_h h_{t-1});  α_t = softmax(e_t);  ẑ_t = Σ_i α_ti a_i
  with the doubly stochastic penalty λ Σ_i (1 − Σ_t α_ti)² (eq. 14; averaged over the L locations here,
  see `doubly_stochastic`).
- hard (§4.1), stochastic: the same α_t, but ẑ_t = a_{s_t} with s_t ~ Multinoulli(α_t); trained on
  the variational lower bound with REINFORCE (eq. 12): λ_r Σ_t (R_t − b_t) ∇log p(s_t), with moving-
  average baselines b_t, and an entropy bonus λ_e H[s]. Half of the batches use the expected context
  Σ_i α_ti a_i instead of a sample (the paper's variance trick). At test time the argmax location
  (default) or the expectation. The reward R_t is log p(y | s, a) for every t as eq. 12 writes it
  ('sequence'), or by default only the words s_t can influence, R_t = Σ_{t'≥t} log p(y_t' | …)
  ('to_go'): the same expected gradient (s_t cannot change earlier words) with less variance.
- dot, multiplicative:   e_tj = (Q h_{t-1})ᵀ (K a_j) / √A
- uniform:               α_tj = 1 / L, the baseline every learned attention must beat.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .kernels import tanh_, use_cpu_kernels
from .registry import registrar

if TYPE_CHECKING:
    from .config import ModelConfig

Out = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def _float32(t: torch.Tensor):
    """No autocast inside: the per-step attention runs in float32 even under bf16 autocast.
    NOTE: on CPU, bf16 tanh is ~4× slower than float32, and autocast would cast the (B, L, D)
    annotation vectors to bf16 again at every step for a matmul of a few MFLOPs."""
    return torch.autocast(t.device.type, enabled=False)


def _weighted(alpha: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    with _float32(feats):
        return torch.bmm(alpha.float().unsqueeze(1), feats.float()).squeeze(1)  # (B, 1, L) @ (B, L, D) → (B, D)


def doubly_stochastic(alphas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The doubly stochastic penalty (eq. 14), *averaged* over the L locations and the batch.

    Paper:  λ Σ_i (1 − Σ_t α_ti)²  per image, a sum over all L locations.
    Here:   λ (1/L) Σ_i (1 − Σ_t α_ti)²  averaged over the images (as the common PyTorch tutorial does),
    Σ_t over real steps only. alphas (B, T, L), mask (B, T).

    NOTE: the cross-entropy is a mean per token (≈ 0.3–3); the paper's sum is ≈ L (1 − T/L)², ≈ 180 at
    L = 196 and T = 10, so λ = 1 let the penalty outweigh the words ~500× and flattened α. Averaged over L
    it is ≈ (1 − T/L)² ≤ 1 whatever the grid, so one λ means the same for a 7×7 and a 14×14 map.
    """
    coverage = (alphas * mask.unsqueeze(-1)).sum(dim=1)  # (B, L): Σ_t α_ti
    return ((1.0 - coverage) ** 2).mean()


_ATTENTIONS: dict[str, type["Attention"]] = {}


register_attention = registrar(_ATTENTIONS, "attention")
"""Class decorator `@register_attention(name)`: `create_attention(name, ...)` builds this class."""


def list_attentions() -> list[str]:
    """Registered attention kinds, sorted."""
    return sorted(_ATTENTIONS)


class Attention(nn.Module):
    """Interface: `prepare` once per image, `forward` every step, `regularizer` in the loss."""

    @classmethod
    def options(cls, config: "ModelConfig") -> dict[str, Any]:
        """This kind's own constructor options, read from a model config (default: none)."""
        return {}

    def prepare(self, feats: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def begin_batch(self) -> None:
        """Called before every training batch (hard attention flips its expected-context coin)."""

    def forward(self, feats: torch.Tensor, keys: torch.Tensor, query: torch.Tensor) -> Out:
        raise NotImplementedError

    def read(self, feats: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The context ẑ (B, D) this kind reads from a given α (B, L) at test time: Σ_i α_i a_i.
        Steering (sat/steer.py) calls it with a forced α instead of the one `forward` computes."""
        return _weighted(alpha, feats)

    def regularizer(self, alphas: torch.Tensor, sample_logp: torch.Tensor | None, token_logp: torch.Tensor,
                    mask: torch.Tensor, *, alpha_c: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Extra loss terms of this kind (default: the doubly stochastic penalty); stats as 0-dim
        tensors (no host sync in the loss: the training loop reads them once per step)."""
        reg = doubly_stochastic(alphas, mask)
        return alpha_c * reg, {"att_reg": reg.detach()}


@register_attention("soft")
class SoftAttention(Attention):
    """Additive (Bahdanau) attention, the paper's deterministic 'soft' attention."""

    def __init__(self, *, encoder_dim: int, decoder_dim: int, attention_dim: int):
        super().__init__()
        self.key = nn.Linear(encoder_dim, attention_dim)                # W_a
        self.query = nn.Linear(decoder_dim, attention_dim, bias=False)  # W_h
        self.score = nn.Linear(attention_dim, 1)                        # w

    def prepare(self, feats):
        return self.key(feats).float()  # (B, L, A); the one big matmul may run in bf16, the rest float32

    CHUNK_ELEMENTS = 1 << 18
    """Inference computes tanh(W_a a + W_h h) for this many (row, location, unit) elements at a time."""

    def weights(self, keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        q = self.query(query).float().unsqueeze(1)        # (B, 1, A)
        B, L, A = keys.shape
        rows = max(1, self.CHUNK_ELEMENTS // max(1, L * A))
        with _float32(keys):
            if torch.is_grad_enabled() or B <= rows or not use_cpu_kernels(keys):
                e = self.score(tanh_(keys + q)).squeeze(-1)  # (B, L); NOTE: in place, one (B, L, A) buffer less
            else:
                # NOTE: search runs B = images × beams rows: a (B, L, A) intermediate of tens of MB goes
                # through memory three times per step; chunks of ~1 MB stay in cache (2–4× faster here).
                e = torch.cat([self.score(tanh_(keys[i:i + rows] + q[i:i + rows])).squeeze(-1)
                               for i in range(0, B, rows)])  # (B, L)
            return torch.softmax(e, dim=-1)

    def forward(self, feats, keys, query):
        alpha = self.weights(keys, query)
        return _weighted(alpha, feats), alpha, None


@register_attention("hard")
class HardAttention(SoftAttention):
    """Stochastic hard attention: the soft model's α_t used as a distribution over locations."""

    POSITIONS = 64
    """Baselines kept per caption position (later positions share the last one)."""

    def __init__(self, *, encoder_dim: int, decoder_dim: int, attention_dim: int,
                 entropy_weight: float = 0.01, reinforce_weight: float = 1.0, baseline_decay: float = 0.9,
                 test_rule: str = "argmax", reward: str = "to_go"):
        super().__init__(encoder_dim=encoder_dim, decoder_dim=decoder_dim, attention_dim=attention_dim)
        if test_rule not in ("argmax", "expectation"):
            raise ValueError(f"test_rule must be 'argmax' or 'expectation', got {test_rule!r}")
        if reward not in ("to_go", "sequence"):
            raise ValueError(f"reward must be 'to_go' or 'sequence', got {reward!r}")
        self.entropy_weight, self.reinforce_weight = entropy_weight, reinforce_weight
        self.baseline_decay, self.test_rule, self.reward = baseline_decay, test_rule, reward
        self.expected = False  # set per batch by the model: use Σ α a instead of a sample
        # b_t: moving average of the reward at caption position t
        self.register_buffer("baseline", torch.zeros(self.POSITIONS))
        self.register_buffer("baseline_set", torch.zeros(self.POSITIONS, dtype=torch.bool))

    @classmethod
    def options(cls, config: "ModelConfig") -> dict[str, Any]:
        # NOTE: flat hard_* fields in ModelConfig so that config.json files stay as they are
        return dict(entropy_weight=config.hard_entropy, reinforce_weight=config.hard_reinforce,
                    reward=config.hard_reward, test_rule=config.hard_test_rule)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # NOTE: weights saved before per-position baselines hold one scalar b: it becomes every b_t
        for name in ("baseline", "baseline_set"):
            v = state_dict.get(prefix + name)
            if v is not None and v.dim() == 0:
                state_dict[prefix + name] = v.expand(self.POSITIONS).clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def begin_batch(self) -> None:
        # NOTE: the paper's variance trick: with probability 0.5 a batch uses Σ α a (soft) instead
        # of a sampled location. Drawn from torch's RNG, so runs stay seeded.
        self.expected = bool(torch.rand(()) < 0.5)

    def forward(self, feats, keys, query):
        alpha = self.weights(keys, query)  # (B, L)
        if self.training and not self.expected:
            s = torch.multinomial(alpha.detach(), 1).squeeze(1)          # s_t ~ Multinoulli(α_t)
            logp = torch.log(alpha.gather(1, s[:, None]).squeeze(1) + 1e-12)  # log p(s_t | a)
            return feats[torch.arange(feats.size(0)), s], alpha, logp
        if self.training or self.test_rule == "expectation":
            return _weighted(alpha, feats), alpha, None
        return self.read(feats, alpha), alpha, None

    def read(self, feats, alpha):
        if self.training or self.test_rule == "expectation":
            return _weighted(alpha, feats)
        s = alpha.argmax(dim=-1)  # (B,) the test-time rule: the most probable location only
        return feats[torch.arange(feats.size(0)), s]

    def rewards(self, token_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """R_t (B, T) from log p(y_t | …) (B, T): words from t on ('to_go') or the whole caption."""
        token_logp = token_logp * mask
        if self.reward == "sequence":
            return token_logp.sum(dim=1, keepdim=True).expand_as(mask)
        return token_logp.flip(1).cumsum(1).flip(1)  # R_t = Σ_{t' ≥ t} log p(y_t')

    @torch.no_grad()
    def _update_baseline(self, reward: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """b (T,) for this batch (the moving average so far; this batch's mean where none yet), then
        move each b_t towards this batch's mean reward at position t."""
        T = mask.size(1)
        t = min(T, self.POSITIONS)
        pos = torch.arange(T, device=mask.device).clamp_max(t - 1)  # later positions share the last
        count = mask.sum(0)[:t]  # (t,)
        mean = (reward * mask).sum(0)[:t] / count.clamp_min(1.0)  # (t,)
        seen = self.baseline_set[:t]
        used = torch.where(seen, self.baseline[:t], mean)[pos]  # (T,)
        live = count > 0
        moved = torch.where(seen, self.baseline_decay * self.baseline[:t] + (1 - self.baseline_decay) * mean, mean)
        self.baseline[:t] = torch.where(live, moved, self.baseline[:t])
        self.baseline_set[:t] = seen | live
        return used

    def regularizer(self, alphas, sample_logp, token_logp, mask, *, alpha_c):
        entropy = -(alphas * torch.log(alphas + 1e-12)).sum(-1)  # (B, T): H[s_t]
        n = mask.sum().clamp_min(1.0)
        mean_entropy = (entropy * mask).sum() / n
        loss = -self.entropy_weight * mean_entropy
        stats = {"entropy": mean_entropy.detach(), "baseline": self.baseline[0].clone()}
        if alpha_c:  # the doubly stochastic penalty on α, as for soft attention (off by default)
            penalty, penalty_stats = Attention.regularizer(self, alphas, sample_logp, token_logp, mask, alpha_c=alpha_c)
            loss = loss + penalty
            stats.update(penalty_stats)
        if sample_logp is None:  # an expected-context batch: plain maximum likelihood
            return loss, stats
        reward = self.rewards(token_logp.detach(), mask)  # (B, T)
        b = self._update_baseline(reward, mask)  # (T,)
        advantage = (reward - b) * mask  # (B, T)
        # NOTE: per token, as the cross-entropy: summed over the caption, λ_r = 1 would weigh the
        # REINFORCE term ~T times the likelihood term and the gradient clip would mostly cut the latter.
        loss = loss - self.reinforce_weight * (advantage * sample_logp).sum() / n
        stats.update({"reward": (token_logp.detach() * mask).sum(1).mean(),
                      "advantage": advantage.abs().sum() / n})
        return loss, stats


@register_attention("dot")
class DotAttention(Attention):
    """Multiplicative attention e_tj = (Q s_t)ᵀ K x_j, scaled by 1/√A."""

    def __init__(self, *, encoder_dim: int, decoder_dim: int, attention_dim: int):
        super().__init__()
        self.key = nn.Linear(encoder_dim, attention_dim, bias=False)    # K
        self.query = nn.Linear(decoder_dim, attention_dim, bias=False)  # Q
        # NOTE: the 1/√A scale only sets the softmax temperature at initialisation; without it,
        # the logits' spread grows with A and the attention starts nearly one-hot.
        self.scale = 1.0 / math.sqrt(attention_dim)

    def prepare(self, feats):
        return self.key(feats)  # (B, L, A)

    def forward(self, feats, keys, query):
        q = self.query(query).unsqueeze(-1)                           # (B, A, 1)
        alpha = torch.softmax(torch.bmm(keys, q).squeeze(-1) * self.scale, dim=-1)  # (B, L)
        return _weighted(alpha, feats), alpha, None


@register_attention("uniform")
class UniformAttention(Attention):
    """p_tj = 1/L: the context is the mean annotation vector at every step."""

    def __init__(self, *, encoder_dim: int, decoder_dim: int, attention_dim: int):
        super().__init__()

    def prepare(self, feats):
        return feats.new_zeros(feats.shape[:2] + (0,))  # (B, L, 0): nothing to precompute

    def forward(self, feats, keys, query):
        alpha = feats.new_full(feats.shape[:2], 1.0 / feats.size(1))  # (B, L)
        return feats.mean(dim=1), alpha, None

    def regularizer(self, alphas, sample_logp, token_logp, mask, *, alpha_c):
        return alphas.new_zeros(()), {}  # constant: nothing to learn


def create_attention(name: str, *, encoder_dim: int, decoder_dim: int, attention_dim: int,
                     **options) -> Attention:
    """Build a registered attention kind by name (options go to kinds that take them)."""
    if name not in _ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}; known: {', '.join(list_attentions())}")
    return _ATTENTIONS[name](encoder_dim=encoder_dim, decoder_dim=decoder_dim, attention_dim=attention_dim,
                             **options)


def attention_from_config(config: "ModelConfig") -> Attention:
    """The attention kind a model config names, with that kind's options (`Attention.options`)."""
    cls = _ATTENTIONS.get(config.attention)
    return create_attention(config.attention, encoder_dim=config.encoder_dim, decoder_dim=config.decoder_dim,
                            attention_dim=config.attention_dim, **(cls.options(config) if cls else {}))
