"""`Captioner`: pixels in, words + per-word attention maps out. The public inference API.

    cap = Captioner.load("assets/weights/soft")
    out = cap.caption(Image.open("photo.jpg"), beam_size=3)
    out.words, out.attention.shape  # ['a', 'red', 'circle'], (T, h, w) with T = len(words) + 1 (<end>)
    out.truncated                   # True when cut at max_len words: then T = len(words), no <end>
    cap.caption(image, force={2: (7, 3)})  # word 2's attention forced onto grid cell row 7, col 3
                                           # (sat/steer.py: words counted from 1, earlier ones kept)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from .config import INT_LIMITS, ModelConfig
from .device import resolve_device
from .hub import resolve_weights
from .encoder import Encoder, create_encoder
from .image import model_input
from .labels import ImageNetHead, imagenet_head
from .model import CaptionModel
from .ood import OODError, OODResult, OODStats, check_images, load_stats
from .search import MAX_BEAM_SIZE, Hypothesis, check_options, compile_step, decode
from .steer import steer_hypothesis
from .vocab import END, Vocab
from .weights import CARD_FILE, WeightsError, check_encoder_fit, load_into, read_weights


@dataclass
class Caption:
    words: list[str]
    """The caption's words (no <end>)."""
    tokens: list[str]
    """Every generated token: words, then "<end>" when the model ended the caption."""
    attention: np.ndarray
    """(T, h, w) float32 attention map for each token in `tokens`; each map sums to 1."""
    token_probs: list[float]
    """p(token | previous tokens, image) for each token."""
    logprob: float
    """Total log-probability of `tokens`."""
    score: float
    """The search's ranking score: logprob / ((5 + T) / 6)^length_penalty (== logprob by default)."""
    truncated: bool = False
    """Cut at max_len words: the model would have gone on, so `tokens` has no "<end>"."""
    ood: OODResult | None = None
    """Is the image unlike the training images? None when the weights have no statistics (`sat.ood`)."""
    encoder_top3: list[tuple[str, float]] | None = None
    """The backbone's ImageNet top-3 (label, probability), where it has a classifier (`sat.labels`)."""
    text: str = field(init=False)

    def __post_init__(self) -> None:
        self.text = " ".join(self.words)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "words": self.words, "tokens": self.tokens,
                "token_probs": self.token_probs, "logprob": self.logprob, "score": self.score,
                "truncated": self.truncated, "attention": self.attention.round(5).tolist(),
                "ood": None if self.ood is None else self.ood.flagged,
                "ood_distance": None if self.ood is None else self.ood.distance,
                "ood_threshold": None if self.ood is None else self.ood.threshold,
                "encoder_top3": None if self.encoder_top3 is None else
                [{"label": k, "p": p} for k, p in self.encoder_top3]}


class Captioner:
    """Encoder + caption model + vocabulary, loaded once and reused for every request."""

    def __init__(self, *, encoder: Encoder, model: CaptionModel, vocab: Vocab,
                 metrics: dict[str, Any] | None = None, card: str = "", source: str = "",
                 device: torch.device | str | None = None, ood: OODStats | None = None, ood_error: str = "",
                 head: ImageNetHead | None = None):
        self.device = resolve_device(device)
        self.ood = ood.to(self.device) if ood is not None else None
        self.ood_error = ood_error
        """Why there is no OOD check (missing or invalid statistics), for the UI and the log."""
        self.head = head.to(self.device) if head is not None else None
        self.encoder = encoder.to(self.device).eval()
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.metrics = metrics or {}
        self.card = card
        self.source = source

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @classmethod
    def load(cls, spec: str | Path, *, device: torch.device | str | None = None,
             compile: bool = False) -> "Captioner":
        """Load a weights folder or ``hf://owner/repo[@revision]`` (safetensors + JSON, resolved by
        `sat.hub.resolve_weights`); raises WeightsError naming what is wrong. `compile`: the decoder
        step under torch.compile (`sat.search.compile_step`)."""
        device = resolve_device(device)  # NOTE: first: a missing GPU is not worth fetching weights for
        path = resolve_weights(spec)
        tensors, config, vocab, metrics = read_weights(path)
        try:
            encoder = create_encoder(config.encoder, feature_map=config.feature_map,
                                     finetune_blocks=config.finetune_blocks)
        except ValueError as e:  # an encoder name / feature map / tail this version does not know
            raise WeightsError(f"{path}: {e}") from None
        check_encoder_fit(config, grid=encoder.grid(config.image_size), dim=encoder.dim, source=str(path))
        model = CaptionModel(config, tail=encoder.tail)
        load_into(model, tensors, source=str(path))
        card_path = Path(path) / CARD_FILE
        card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
        # NOTE: bad OOD statistics cost the check, not the model: the reason is kept and shown
        ood, ood_error = None, ""
        try:
            ood = load_stats(path, dim=_trunk_dim(encoder, config))
        except OODError as e:
            ood_error = str(e)
        cap = cls(encoder=encoder, model=model, vocab=vocab, metrics=metrics, card=card,
                  source=str(spec), device=device, ood=ood, ood_error=ood_error,
                  head=imagenet_head(config.encoder, trunk_blocks=len(encoder.trunk), device=str(device)))
        if compile:
            compile_step(cap.model.decoder)
        return cap

    def pixels(self, images: Sequence[Any]) -> torch.Tensor:
        """Images (PIL / path / bytes) → (B, 3, S, S) normalised tensor. Raises ImageError."""
        cfg = self.config
        return torch.stack([model_input(im, **cfg.preprocessing) for im in images])

    @torch.inference_mode()
    def caption_batch(self, images: Sequence[Any], *, mode: str = "beam", beam_size: int = 3,
                      max_len: int | None = None, temperature: float = 1.0, length_penalty: float = 0.0,
                      no_repeat_ngram_size: int = 0, seed: int | None = None) -> list[Caption]:
        """Caption several images in one batch. Every image must be readable (see `caption`).
        Decoding options are those of `sat.search.decode`; bad values raise a one-line ValueError."""
        if len(images) == 0:
            return []
        x = self.pixels(images).to(self.device)
        fmap = self.encoder.encode_trunk(x)  # (B, C, h, w)
        caps = self.caption_features(fmap, mode=mode, beam_size=beam_size, max_len=max_len,
                                     temperature=temperature, length_penalty=length_penalty,
                                     no_repeat_ngram_size=no_repeat_ngram_size, seed=seed)
        self._inspect(fmap, caps)
        return caps

    def _inspect(self, fmap: torch.Tensor, caps: list[Caption]) -> None:
        """Attach the OOD check and the encoder's ImageNet top-3 to each caption (from the same map)."""
        ood = check_images(self.ood, fmap, dataset=str(self.metrics.get("dataset", ""))) \
            if self.ood is not None else None
        top3 = self.head.top_k(fmap, 3) if self.head is not None else None
        for i, cap in enumerate(caps):
            cap.ood = ood[i] if ood else None
            cap.encoder_top3 = top3[i] if top3 else None

    @torch.inference_mode()
    def caption_features(self, fmap: torch.Tensor, *, mode: str = "beam", beam_size: int = 3,
                         max_len: int | None = None, temperature: float = 1.0,
                         length_penalty: float = 0.0, no_repeat_ngram_size: int = 0,
                         seed: int | None = None,
                         force: Mapping[int, tuple[int, int]] | None = None) -> list[Caption]:
        """Caption from encoder-trunk feature maps (B, C, h, w), e.g. read from the feature cache.
        With `force` ({word index from 1: (row, col)}, one image only): the steered caption
        (sat/steer.py), decoded after the original one with the same settings."""
        cfg = self.config
        max_len = cfg.max_len if max_len is None else max_len
        lo, hi = INT_LIMITS["max_len"]
        if not lo <= max_len <= hi:
            raise ValueError(f"max_len must be in [{lo}, {hi}], got {max_len}")
        if mode == "beam" and not 1 <= beam_size <= MAX_BEAM_SIZE:
            raise ValueError(f"beam_size must be in [1, {MAX_BEAM_SIZE}], got {beam_size}")
        check_options(length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
        gen = None
        if seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(seed)
        feats = self.model.annotations(fmap.to(self.device, torch.float32))  # (B, L, D)
        opts = dict(mode=mode, beam_size=beam_size, max_len=max_len, temperature=temperature,
                    length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                    pad_id=self.vocab.pad_id, start_id=self.vocab.start_id, end_id=self.vocab.end_id,
                    unk_id=self.vocab.unk_id)
        hyps = decode(self.model.decoder, feats, generator=gen, **opts)
        if force is not None:
            if seed is not None:  # NOTE: the same draws as the original caption up to the forced word
                gen = torch.Generator(device=self.device).manual_seed(seed)
            hyps = [steer_hypothesis(self.model.decoder, feats, hyps[0], force, grid=cfg.grid,
                                     hard=cfg.attention == "hard", generator=gen, **opts)]
        return [self._to_caption(hyp, cfg.grid) for hyp in hyps]

    def _to_caption(self, hyp: Hypothesis, grid: tuple[int, int]) -> Caption:
        tokens = [self.vocab.itos[i] for i in hyp.tokens]
        words = tokens[:-1] if tokens and tokens[-1] == END else tokens
        att = hyp.alphas.numpy().astype(np.float32).reshape(len(tokens), *grid)  # (T, h, w)
        return Caption(words=words, tokens=tokens, attention=att,
                       token_probs=[float(np.exp(lp)) for lp in hyp.token_logprobs],
                       logprob=hyp.logprob, score=hyp.score, truncated=hyp.truncated)

    def caption(self, image: Image.Image | str | Path | bytes, *,
                force: Mapping[int, tuple[int, int]] | None = None, **kwargs: Any) -> Caption:
        """Caption one image (PIL image, path or encoded bytes). Raises ImageError if unreadable.
        `force` = {t: (row, col)}: word t's attention (t from 1) forced onto that grid cell, the
        words before t kept (sat/steer.py); bad t / row / col → one-line ValueError."""
        if force is None:
            return self.caption_batch([image], **kwargs)[0]
        x = self.pixels([image]).to(self.device)
        with torch.inference_mode():
            fmap = self.encoder.encode_trunk(x)  # (1, C, h, w)
        return self.caption_features(fmap, force=force, **kwargs)[0]


def _trunk_dim(encoder: Encoder, config: ModelConfig) -> int:
    """Channels of the trunk map (what the OOD statistics are of): D unless a tail is fine-tuned."""
    if not config.finetune_blocks:
        return config.encoder_dim
    with torch.inference_mode():
        x = torch.zeros(1, 3, config.image_size, config.image_size, device=next(encoder.parameters()).device)
        return int(encoder.encode_trunk(x).shape[1])
