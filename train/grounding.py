"""Attention grounding scores: does the model look at the object it names?

Xu et al. 2015 (Show, Attend and Tell) show qualitatively (§5.4, Fig. 3-5) that the attention of
the step emitting a word falls on the object the word names. On the generated scenes
(``train.data.scenes``) every object's pixel mask is known, so this can be measured:

* for each generated word that names an object (a shape noun, singular or plural, with the colour
  word right before it when there is one: "red circle", "two green triangles"), the referred
  ground-truth objects are those with that shape and, if given, that colour. An ambiguous phrase
  refers to all matching objects (any of them counts); a phrase matching no object (a
  hallucination) is not scored but counted in ``n_unmatched``;
* the attention map of the **shape noun's own decoding step** is upsampled to the image with
  `sat.viz.upsample_attention` (the one implementation the figures use; scenes are square and
  preprocessed with ``resize="crop"``) with ``border="cell"``, which keeps an edge cell's peak at
  the cell's centre instead of on the image edge (see sat/viz.py: with the display default
  "reflect", even an oracle attention points at only 88 % of scene objects), then
* **pointing**: the map's argmax lies inside the referred objects' pixel *masks* (not their
  boxes). Ties go to the first maximum in row-major order (``np.argmax``: top-most, then
  left-most), so a flat map "points" at the top-left pixel;
* **mass**: the fraction of the map's mass inside the union of those masks.

``pointing_best`` / ``mass_best`` take the best over the whole phrase's tokens (determiner, size,
colour, noun), since some models attend to the object while emitting the adjective.
`uniform_chance` gives the chance level over the same words: mass = the masks' area fraction, and
pointing = the *expected* hit rate of a uniformly random pointer (also the area fraction), since a
deterministic tie-break on a flat map would only measure where the tie-break lands.

`ground_span` does the same for a word span of a caption against boxes (Flickr30k Entities).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
from PIL import Image

from sat.viz import DEFAULT_SMOOTH, upsample_attention
from train.data.scene_grammar import COLOURS, NUMBERS, PLURALS, SHAPES, SIZES

SINGULAR: dict[str, str] = {**{s: s for s in SHAPES}, **{p: s for s, p in PLURALS.items()}}
COUNT_WORDS: dict[str, int] = {"a": 1, "an": 1, "one": 1, **{w: n for n, w in NUMBERS.items()}}
_PHRASE_WORDS = set(COLOURS) | set(SIZES) | set(COUNT_WORDS)


class ObjectWord(NamedTuple):
    index: int
    """Position of the shape noun in the tokens (its attention map is the one scored)."""
    shape: str
    """Singular shape name."""
    colour: str | None
    """The colour word right before the noun, if any."""
    count: int | None
    """1 for a singular noun, the number word's value for a plural, None for a bare plural."""


def find_object_words(tokens: Sequence[str]) -> list[ObjectWord]:
    """Every shape noun in ``tokens`` with its colour (the word right before it) and count."""
    out = []
    for i, tok in enumerate(tokens):
        shape = SINGULAR.get(tok)
        if shape is None:
            continue
        colour = tokens[i - 1] if i > 0 and tokens[i - 1] in COLOURS else None
        if tok == shape:
            count: int | None = 1
        else:
            start, _ = phrase_span(tokens, i)
            count = next((COUNT_WORDS[t] for t in tokens[start:i] if t in COUNT_WORDS
                          and COUNT_WORDS[t] > 1), None)
        out.append(ObjectWord(i, shape, colour, count))
    return out


def phrase_span(tokens: Sequence[str], index: int) -> tuple[int, int]:
    """[start, stop) of the noun phrase ending at ``tokens[index]`` ("two small red hearts")."""
    start = index
    while start > 0 and tokens[start - 1] in _PHRASE_WORDS:
        start -= 1
        if tokens[start] in COUNT_WORDS:  # a determiner opens the phrase
            break
    return start, index + 1


def matching_values(word: ObjectWord, objects: Sequence[dict[str, Any]]) -> list[int]:
    """Mask values of the objects the word refers to (same shape, same colour when given)."""
    return [int(o.get("mask_value", k + 1)) for k, o in enumerate(objects)
            if o["shape"] == word.shape and (word.colour is None or o["colour"] == word.colour)]


def ground_word(attn_map: np.ndarray, masks: Sequence[np.ndarray]) -> tuple[bool, float]:
    """(pointing hit, mass fraction) of one (H, W) map against the union of bool masks.

    The hit is whether the first maximum (row-major, ``np.argmax``) lies in any mask; the mass is
    the map's mass inside the union divided by its total mass (0 for an all-zero map).
    """
    m = np.asarray(attn_map, dtype=np.float64)
    if not masks:
        raise ValueError("need at least one mask")
    union = np.zeros(m.shape, dtype=bool)
    for mk in masks:
        if mk.shape != m.shape:
            raise ValueError(f"mask shape {mk.shape} != map shape {m.shape}")
        union |= mk.astype(bool)
    hit = bool(union.flat[int(np.argmax(m))])
    total = float(m.sum())
    return hit, (float(m[union].sum()) / total if total > 0 else 0.0)


def boxes_to_mask(boxes: Sequence[Sequence[float]], size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool mask of the union of ``[xmin, ymin, xmax, ymax]`` boxes, clipped to the image.

    Coordinates follow PASCAL VOC (as Flickr30k Entities): 1-based pixel indices, max inclusive.
    """
    W, H = size
    mask = np.zeros((H, W), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[max(0, int(y0) - 1):max(0, int(y1)), max(0, int(x0) - 1):max(0, int(x1))] = True
    return mask


def ground_span(attention: np.ndarray, span: tuple[int, int], boxes: Sequence[Sequence[float]],
                *, size: tuple[int, int], resize: str = "crop", image_size: int = 224,
                sigma: float | None = None, smooth: float = DEFAULT_SMOOTH, border: str = "cell",
                use: str = "last") -> tuple[bool, float]:
    """Pointing / mass of a caption word span [start, stop) against boxes on a (W, H) photo.

    ``use="last"`` scores the span's last token (the head noun of an English noun phrase, like the
    shape noun on scenes); ``"mean"`` scores the mean of the span's maps.
    """
    start, stop = span
    att = np.asarray(attention)
    if not 0 <= start < stop <= att.shape[0]:
        raise ValueError(f"span {span} outside the caption's {att.shape[0]} steps")
    if not boxes:
        raise ValueError("need at least one box")
    if use == "last":
        alpha = att[stop - 1]
    elif use == "mean":
        alpha = att[start:stop].mean(0)
    else:
        raise ValueError(f"use must be 'last' or 'mean', got {use!r}")
    m = upsample_attention(alpha, size=size, resize=resize, image_size=image_size, sigma=sigma,
                           smooth=smooth, border=border)
    return ground_word(m, [boxes_to_mask(boxes, size)])


def load_scene_truth(record_extra: dict[str, Any], root: str | Path
                     ) -> tuple[list[dict[str, Any]], np.ndarray]:
    """(objects, (H, W) uint8 mask) of a scenes image from its record's ``extra`` dict."""
    if "objects" not in record_extra or "mask" not in record_extra:
        raise ValueError("not a scenes record: 'objects' and 'mask' are missing")
    with Image.open(Path(root) / record_extra["mask"]) as im:
        mask = np.asarray(im.convert("L"), dtype=np.uint8).copy()
    return list(record_extra["objects"]), mask


def _referred(tokens: Sequence[str], objects: Sequence[dict[str, Any]], mask: np.ndarray):
    """Yield (ObjectWord, union bool mask | None) for each object word of one caption."""
    for word in find_object_words(tokens):
        values = matching_values(word, objects)
        yield word, (np.isin(mask, values) if values else None)


def _check_lengths(n: int, objects: Sequence[Any], masks: Sequence[Any]) -> None:
    if not len(objects) == len(masks) == n:
        raise ValueError(f"{n} captions, {len(objects)} object lists and {len(masks)} masks")


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else math.nan


def grounding_scores(captions: Sequence[tuple[Sequence[str], np.ndarray]],
                     objects: Sequence[Sequence[dict[str, Any]]], masks: Sequence[np.ndarray], *,
                     image_size: int, resize: str = "crop", sigma: float | None = None,
                     smooth: float = DEFAULT_SMOOTH, border: str = "cell",
                     crop_pct: float = 1.0) -> dict[str, float | int]:
    """Pointing and mass over every grounded object word of every caption (micro-averaged).

    ``captions[i]`` = (tokens, attention (T, h, w)) for image i, whose objects and (H, W) mask are
    ``objects[i]`` and ``masks[i]``. Returns pointing, mass (noun step), pointing_best, mass_best
    (best over the phrase), n_words (scored) and n_unmatched (hallucinated objects). The means are
    NaN when no word could be scored.
    """
    _check_lengths(len(captions), objects, masks)
    hits, mass, hits_best, mass_best, unmatched = [], [], [], [], 0
    for (tokens, att), objs, mask in zip(captions, objects, masks):
        att = np.asarray(att)
        H, W = mask.shape
        cache: dict[int, np.ndarray] = {}

        def upsampled(t: int) -> np.ndarray:
            if t not in cache:
                cache[t] = upsample_attention(att[t], size=(W, H), resize=resize,
                                              image_size=image_size, sigma=sigma, smooth=smooth,
                                              border=border, crop_pct=crop_pct)
            return cache[t]

        for word, union in _referred(tokens, objs, mask):
            if union is None:
                unmatched += 1
                continue
            if word.index >= att.shape[0]:
                raise ValueError(f"token {word.index} has no attention map ({att.shape[0]} maps)")
            hit, frac = ground_word(upsampled(word.index), [union])
            hits.append(hit)
            mass.append(frac)
            start, stop = phrase_span(tokens, word.index)
            per_token = [ground_word(upsampled(t), [union]) for t in range(start, stop)]
            hits_best.append(any(h for h, _ in per_token))
            mass_best.append(max(f for _, f in per_token))
    return {"pointing": _mean(hits), "mass": _mean(mass), "pointing_best": _mean(hits_best),
            "mass_best": _mean(mass_best), "n_words": len(hits), "n_unmatched": unmatched}


def uniform_chance(captions: Sequence[Sequence[str] | tuple[Sequence[str], Any]],
                   objects: Sequence[Sequence[dict[str, Any]]], masks: Sequence[np.ndarray]
                   ) -> dict[str, float | int]:
    """Chance level over the same words as `grounding_scores`: a uniform attention map.

    ``captions`` holds token lists (or the same (tokens, attention) pairs; attention is ignored).
    Both pointing (expected hit of a uniformly random pointer) and mass equal the referred masks'
    area fraction, averaged over the scored words. Assumes the crop of a square image, where a
    uniform grid upsamples to a uniform map.
    """
    _check_lengths(len(captions), objects, masks)
    fracs, unmatched = [], 0
    for cap, objs, mask in zip(captions, objects, masks):
        pair = len(cap) == 2 and not isinstance(cap[0], str)
        tokens = cap[0] if pair else cap
        for _, union in _referred(tokens, objs, mask):
            if union is None:
                unmatched += 1
            else:
                fracs.append(float(union.mean()))
    return {"pointing": _mean(fracs), "mass": _mean(fracs), "n_words": len(fracs),
            "n_unmatched": unmatched}
