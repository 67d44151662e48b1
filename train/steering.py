"""Causal grounding: does moving the gaze change the word? (`grounding.steer_success`)

Pointing (train/grounding.py) shows that the attention *falls* on the object a word names; it does
not show that the word *depends* on where the model looks. Steering tests that directly, on the
generated scenes whose objects are known:

* for each test image and each shape noun of its generated caption ("circle", "two crosses") whose
  shape A is in the image (hallucinated shapes are skipped),
* for each object B of the image with a different shape, the caption is re-decoded with the
  attention of that noun's step forced onto B's centre cell (`sat.steer`: the cell under the
  centroid of B's mask; hard attention reads exactly that cell, other kinds a 1-cell Gaussian
  around it), the words before it kept, the same search settings as the evaluation;
* a trial succeeds when the word at that step is B's shape (singular or plural).

``steer_success`` = successes / trials (micro-average over all (word, B) pairs). ``steer_chance``
= 1 / the number of shape words (6): the success rate of a model that, once its gaze is moved,
names a shape at random, ignoring what it looks at. A model whose words ignore its attention
keeps saying A, which scores 0, below chance.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from sat.model import CaptionModel
from sat.search import Hypothesis
from sat.steer import cell_at, steer_hypothesis
from sat.vocab import Vocab
from train.data.scene_grammar import SHAPES
from train.grounding import SINGULAR, find_object_words

if TYPE_CHECKING:
    from train.evaluate import Maps

STEER_CHANCE = 1.0 / len(SHAPES)
"""Chance level of steer_success: a uniformly random shape word."""


def object_centre(mask: np.ndarray, value: int) -> tuple[float, float] | None:
    """(x, y) pixel of an object's mask closest to the mask's centroid (a crescent's or a cross's
    centroid can lie off the shape); None when the object is not visible."""
    ys, xs = np.nonzero(mask == value)
    if xs.size == 0:
        return None
    cx, cy = xs.mean(), ys.mean()
    k = int(np.argmin((xs - cx) ** 2 + (ys - cy) ** 2))
    return float(xs[k]), float(ys[k])


def steer_trials(tokens: Sequence[str], objects: Sequence[dict[str, Any]], mask: np.ndarray, *,
                 grid: tuple[int, int], image_size: int, resize: str = "crop", crop_pct: float = 1.0
                 ) -> list[tuple[int, str, tuple[int, int]]]:
    """(word index from 1, B's shape, B's centre cell) for every trial of one caption (see module)."""
    present = {o["shape"] for o in objects}
    H, W = mask.shape
    out = []
    for word in find_object_words(tokens):
        if word.shape not in present:
            continue  # a hallucinated shape: there is no object A to move the gaze away from
        for k, obj in enumerate(objects):
            if obj["shape"] == word.shape:
                continue
            centre = object_centre(mask, int(obj.get("mask_value", k + 1)))
            if centre is None:
                continue
            cell = cell_at((W, H), *centre, grid=grid, image_size=image_size, resize=resize, crop_pct=crop_pct)
            out.append((word.index + 1, obj["shape"], cell))
    return out


@torch.inference_mode()
def steer_success(model: CaptionModel, vocab: Vocab, maps: Maps, hyps: Sequence[Hypothesis],
                  objects: Sequence[Sequence[dict[str, Any]]], masks: Sequence[np.ndarray], *,
                  mode: str = "beam", beam_size: int = 3, length_penalty: float = 0.0,
                  no_repeat_ngram_size: int = 0, device: torch.device | str = "cpu",
                  progress: bool = False) -> dict[str, float | int]:
    """steer_success, its chance level and the number of trials over a split: ``maps`` (N, C, h, w)
    trunk maps, ``hyps`` their captions decoded with the same settings, ``objects`` / ``masks`` the
    scenes truth per image."""
    if not len(maps) == len(hyps) == len(objects) == len(masks):
        raise ValueError(f"{len(maps)} maps, {len(hyps)} captions, {len(objects)} object lists, {len(masks)} masks")
    model.eval()
    cfg = model.config
    hard = cfg.attention == "hard"
    ids = dict(pad_id=vocab.pad_id, start_id=vocab.start_id, end_id=vocab.end_id, unk_id=vocab.unk_id)
    opts = dict(mode=mode, beam_size=beam_size, max_len=cfg.max_len, length_penalty=length_penalty,
                no_repeat_ngram_size=no_repeat_ngram_size, **ids)
    hits, trials = 0, 0
    for i in tqdm(range(len(hyps)), desc="steering", unit="image", disable=not progress, leave=False):
        tokens = [vocab.itos[t] for t in hyps[i].tokens]
        todo = steer_trials(tokens, objects[i], masks[i], grid=cfg.grid, image_size=cfg.image_size,
                            resize=cfg.resize, crop_pct=cfg.crop_pct)
        if not todo:
            continue
        feats = model.annotations(maps[i:i + 1].to(device, torch.float32))  # (1, L, D)
        for t, shape, cell in todo:
            out = steer_hypothesis(model.decoder, feats, hyps[i], {t: cell}, grid=cfg.grid, hard=hard, **opts)
            word = vocab.itos[out.tokens[t - 1]] if len(out.tokens) >= t else None
            hits += SINGULAR.get(word) == shape
            trials += 1
    return {"steer_success": hits / trials if trials else math.nan, "steer_chance": round(STEER_CHANCE, 4),
            "steer_trials": trials}
