"""Self-critical sequence training (Rennie et al. 2017): REINFORCE on the test metric.

`python -m train fit --scst --init-from DIR ...` fine-tunes a cross-entropy model. For each image of a
batch it samples K captions w^1…w^K from the model, scores each with a reward r(w) against the image's
references (CIDEr-D, train/cider.py, or sentence BLEU-4) and minimises

    L(θ) = −1/(B·K) Σ_i Σ_k (r(w^k_i) − b^k_i) Σ_t log p_θ(w^k_it | w^k_i,<t, I_i)     (eq. 9, per caption)

with the baseline b^k_i the mean reward of the image's *other* K−1 samples (default; Luo 2020's "new
self-critical") or the reward of its greedy caption ŵ_i (the paper's, `--scst-baseline greedy`).
For hard attention the locations s_t sampled while scoring the caption get the same advantage
(REINFORCE on words and locations, as the hard model's own training does with log p as the reward).
An optional bonus λ_H · H̄ (mean per-word entropy of p_θ over the sampled captions) keeps the policy
from collapsing early.

NOTE: two passes: the captions are sampled without gradients (sat.search.sample) and then scored by
teacher forcing (the decoders' batched `forward`), so SCST works for every decoder and attention kind
without a second, differentiable sampler. Dropout is off in both passes, so the scored policy is the
sampled one (for hard attention the word sampler takes the argmax location — its test rule — and the
scoring pass samples locations: an approximation on the location side).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from torch import nn

from sat.model import CaptionModel, nll_grid
from sat.search import greedy, sample
from sat.vocab import Vocab
from train.cider import CiderD, bleu4_sentences

if TYPE_CHECKING:
    from train.evaluate import Maps

Tokens = Sequence[str]


def others_mean(rewards: torch.Tensor) -> torch.Tensor:
    """rewards (B, K) → baseline (B, K): each sample's mean reward of the image's other K−1 samples."""
    K = rewards.size(1)
    if K < 2:
        raise ValueError("the mean-of-others baseline needs at least 2 samples per image")
    return (rewards.sum(1, keepdim=True) - rewards) / (K - 1)


class Reward:
    """r(captions, their images' cache rows) → (P,) rewards; references looked up by row."""

    def __init__(self, kind: str, *, references: dict[int, list[Tokens]], corpus: Sequence[Sequence[Tokens]]):
        if kind not in ("cider", "bleu4"):
            raise ValueError(f"reward must be 'cider' or 'bleu4', got {kind!r}")
        self.kind, self.references = kind, references
        self.cider = CiderD(corpus) if kind == "cider" else None

    def __call__(self, hyps: Sequence[Tokens], rows: Sequence[int]) -> np.ndarray:
        refs = [self.references[r] for r in rows]
        if self.cider is not None:
            return self.cider.scores(hyps, refs, keys=list(rows))
        return bleu4_sentences(hyps, refs)


def _dropout_off(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()


@dataclass
class SCSTObjective:
    """The SCST loss of a batch of images: `objective(model, maps, rows) -> (loss, stats)`."""
    vocab: Vocab
    reward: Callable[[Sequence[Tokens], Sequence[int]], np.ndarray]
    samples: int = 5
    """K captions per image."""
    baseline: str = "mean"
    """"mean" (of the other K−1 samples) or "greedy"."""
    entropy: float = 0.0
    """λ_H, weight of the entropy bonus."""
    max_len: int = 0
    """Longest sampled caption (0: the model's max_len)."""

    def __post_init__(self) -> None:
        if self.baseline not in ("mean", "greedy"):
            raise ValueError(f"baseline must be 'mean' or 'greedy', got {self.baseline!r}")
        if self.samples < (2 if self.baseline == "mean" else 1):
            raise ValueError("need ≥ 2 samples per image with the mean baseline (≥ 1 with greedy)")

    def _ids(self) -> dict:
        v = self.vocab
        return {"pad_id": v.pad_id, "start_id": v.start_id, "end_id": v.end_id, "unk_id": v.unk_id}

    def __call__(self, model: CaptionModel, maps: torch.Tensor,
                 rows: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        rows = [int(r) for r in rows]
        B, K = maps.size(0), self.samples
        max_len = self.max_len or model.config.max_len
        model.train()
        _dropout_off(model)
        feats = model.annotations(maps)  # (B, L, D)
        att = getattr(model.decoder, "attention", None)
        was_training = model.decoder.training
        with torch.no_grad():
            model.decoder.eval()  # NOTE: the decoder's test-time step (hard: argmax location) draws the words
            rep = feats.detach().repeat_interleave(K, 0)  # (B·K, L, D): image i's samples at rows iK…iK+K−1
            hyps = sample(model.decoder, rep, max_len=max_len, **self._ids())
            words = [self.vocab.decode(h.tokens) for h in hyps]
            r = torch.as_tensor(self.reward(words, [x for x in rows for _ in range(K)]),
                                dtype=torch.float32).view(B, K)  # (B, K)
            if self.baseline == "mean":
                b = others_mean(r)
                greedy_r = None
            else:
                g = greedy(model.decoder, feats.detach(), max_len=max_len, **self._ids())
                greedy_r = torch.as_tensor(self.reward([self.vocab.decode(h.tokens) for h in g], rows),
                                           dtype=torch.float32)  # (B,)
                b = greedy_r[:, None].expand(B, K)
        model.decoder.train(was_training)
        _dropout_off(model)
        if att is not None and hasattr(att, "expected"):
            att.expected = False  # NOTE: hard attention samples its locations in the scoring pass
        # the sampled captions as teacher-forcing input: <start> w_1 … w_n (<end> unless cut) <pad>…
        T = max(len(h.tokens) for h in hyps)
        caps = torch.full((B * K, T + 1), self.vocab.pad_id, dtype=torch.long)  # (B·K, T+1)
        caps[:, 0] = self.vocab.start_id
        for i, h in enumerate(hyps):
            caps[i, 1:len(h.tokens) + 1] = torch.tensor(h.tokens, dtype=torch.long)
        caps = caps.to(maps.device)
        inputs, targets = caps[:, :-1], caps[:, 1:]  # (B·K, T)
        mask = targets != self.vocab.pad_id  # (B·K, T)
        feats_rep = feats.repeat_interleave(K, 0)  # (B·K, L, D), with gradients into the tail
        logits, _, sample_logp = model.decoder(feats_rep, inputs, mask)  # (N|B·K·T, V), _, (B·K, T)|None
        nll = nll_grid(logits, targets, mask)  # (B·K, T)
        caption_logp = -nll.sum(1)  # (B·K,) log p(w), summed per token
        adv = (r - b).reshape(-1).to(caption_logp.device)  # (B·K,)
        policy = caption_logp
        if sample_logp is not None:  # locations: the same advantage
            policy = policy + (sample_logp.float() * mask).sum(1)
        loss = -(adv * policy).mean()  # averaged per caption
        n_tok = mask.sum().clamp_min(1)
        stats = {"xent": float(nll.sum().detach() / n_tok), "reward": float(r.mean()),
                 "advantage": float(adv.abs().mean()), "length": float(mask.sum(1).float().mean())}
        if self.entropy:
            logp_all = torch.log_softmax(logits.float(), -1)  # (N, V) or (B·K, T, V)
            h = -(logp_all.exp() * logp_all).sum(-1)  # (N,) or (B·K, T)
            h_mean = h[mask].mean() if h.dim() == 2 else h.mean()
            loss = loss - self.entropy * h_mean
            stats["entropy"] = float(h_mean.detach())
        if greedy_r is not None:
            stats["greedy_reward"] = float(greedy_r.mean())
        stats["loss"] = float(loss.detach())
        return loss, stats


def greedy_cider(model: CaptionModel, vocab: Vocab, maps: Maps, rows: Sequence[int],
                 scorer: Reward, *, device: torch.device | str = "cpu") -> float:
    """Validation score of SCST runs: the mean reward (CIDEr-D by default) of greedy captions."""
    from train.evaluate import generate_words
    words = generate_words(model, vocab, maps, mode="greedy", device=device)
    return float(np.mean(scorer(words, list(rows))))


class RowsOf:
    """A reward called with the training data's image rows (`Batch.image_rows`: positions in
    `train_rows`) that scores against the references of the cache rows they stand for."""

    def __init__(self, reward: Reward, train_rows: Sequence[int]):
        self.reward, self.train_rows = reward, [int(r) for r in train_rows]

    def __call__(self, hyps: Sequence[Tokens], rows: Sequence[int]) -> np.ndarray:
        return self.reward(hyps, [self.train_rows[r] for r in rows])


def scst_setup(tc, *, records, cache, vocab: Vocab, train_rows: Sequence[int], val_rows: Sequence[int],
               val_maps: Maps, device: torch.device | str = "cpu"
               ) -> tuple[SCSTObjective, Callable[[CaptionModel], float], str]:
    """(objective, validate, score name) of an SCST run from its TrainConfig (`tc.scst_*`).

    References per cache row are the records' tokenized captions (`sat.vocab.tokenize`); CIDEr-D's
    document frequencies come once from the training split's references. `train_rows`: the cache
    row of each image of the training data (`CaptionData.maps`), whose positions the batches carry.
    NOTE: the cache is in the records' order, where splits can interleave (Karpathy's COCO file):
    scoring a batch's positions as cache rows would reward captions against other images."""
    by_id = {r.image_id: r for r in records}
    refs = {i: [list(c) for c in by_id[cid].captions] for i, cid in enumerate(cache.ids) if cid in by_id}
    corpus = [refs[i] for i, cid in enumerate(cache.ids) if cid in by_id and by_id[cid].split == "train"]
    reward = Reward(tc.scst_reward, references=refs, corpus=corpus)
    objective = SCSTObjective(vocab=vocab, reward=RowsOf(reward, train_rows), samples=tc.scst_samples,
                              baseline=tc.scst_baseline, entropy=tc.scst_entropy, max_len=tc.scst_max_len)
    rows = list(val_rows)

    def validate(m: CaptionModel) -> float:
        return greedy_cider(m, vocab, val_maps, rows, reward, device=device)

    return objective, validate, "CIDEr-D" if tc.scst_reward == "cider" else "BLEU-4 (sentence mean)"
