"""Steer the gaze in the app: a click on a model's picture re-decodes its caption with the selected
word's attention forced there (`Captioner.caption(force=…)`, sat/steer.py), free of any UI.

    steered = steer_upload(slots, "photo.jpg", "hard", word=3, x=120, y=40, options=DecodeOptions())
    steered.to_json()   # the /caption format, for that model only, plus a "steered" block

Word numbers count from 1 (word 1 is the first word; the last is `<end>`), x / y are pixels of the
uploaded image (after its EXIF rotation, as `sat.image.load_image` returns it). A point outside
the square the model sees (non-square photos are centre-cropped) is a ValueError saying where the
square is.
"""
from __future__ import annotations

import difflib
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sat.captioner import Caption
from sat.image import load_image
from sat.steer import cell_at

from .inference import DecodeOptions, ModelSlot, StudioResult, as_number


@dataclass
class Steered:
    """One model's caption with word `word`'s gaze forced onto pixel (x, y) = grid cell `cell`."""

    name: str
    original: Caption
    caption: Caption
    word: int
    """The forced word, counted from 1."""
    x: float
    y: float
    cell: tuple[int, int]
    size: tuple[int, int]
    """(W, H) of the uploaded image."""
    source: str

    def to_json(self) -> dict[str, Any]:
        """The /caption answer's shape for this one model, plus what was forced and the original."""
        model = {**self.caption.to_dict(), "grid": list(self.caption.attention.shape[1:]), "weights": self.source,
                 "steered": {"word": self.word, "x": self.x, "y": self.y, "cell": list(self.cell),
                             "original": self.original.text}}
        return {"image": {"width": self.size[0], "height": self.size[1]}, self.name: model}


def _slot(slots: list[ModelSlot], name: Any) -> ModelSlot:
    names = [s.name for s in slots]
    slot = next((s for s in slots if s.name == name), None)
    if slot is None:
        raise ValueError(f"model must be one of {', '.join(map(repr, names))}, got {name!r}")
    if not slot.ready:
        raise ValueError(f"the {name} model is not loaded: {slot.error}")
    return slot


def steer_upload(slots: list[ModelSlot], source: str | Path | bytes, name: Any, word: Any, x: Any, y: Any,
                 options: DecodeOptions) -> Steered:
    """Model ``name``'s caption of the upload with word ``word`` (from 1) looking at pixel (x, y).
    Raises ImageError (unreadable) or a one-line ValueError (bad model, word, point or option)."""
    opts = options.checked()
    slot = _slot(slots, name)
    t = as_number(word, "word")
    if t != int(t):
        raise ValueError(f"word must be a whole number (counted from 1), got {word!r}")
    px, py = as_number(x, "x"), as_number(y, "y")
    image = load_image(source)
    cap = slot.captioner
    assert cap is not None
    cfg = cap.config
    cell = cell_at(image.size, px, py, grid=cfg.grid, image_size=cfg.image_size, resize=cfg.resize,
                   crop_pct=cfg.crop_pct)
    kw = dict(mode=opts.mode, beam_size=opts.beam_size, max_len=opts.max_len, temperature=opts.temperature,
              length_penalty=opts.length_penalty, no_repeat_ngram_size=opts.no_repeat_ngram_size)
    if opts.mode == "sample":
        kw["seed"] = 0  # NOTE: the same draws before and after the click, so only the gaze differs
    # NOTE: decoded once for both captions, as `sat.image.model_input` decodes it for this model
    # (the JPEG draft, as in training); captioning the decoded image gives the same input bit for bit
    seen = load_image(source, decode_for=cfg.preprocessing)
    with torch.inference_mode():
        original = cap.caption(seen, **kw)
        steered = cap.caption(seen, force={int(t): cell}, **kw)
    return Steered(slot.name, original, steered, int(t), px, py, cell, image.size, slot.spec)


def display_to_image(result: StudioResult, x: float, y: float) -> tuple[float, float]:
    """A pixel of the shown picture (the display copy) → the same point in the uploaded image."""
    dw, dh = result.display.size
    w, h = result.size
    return x * w / dw, y * h / dh


def steer_html(steered: Steered | None) -> str:
    """"If it looked here: …" with the words that differ from the original marked (or nothing)."""
    if steered is None:
        return '<div class="sat-steer"></div>'
    old, new = steered.original.tokens, steered.caption.tokens
    parts = []
    for op, _, _, j0, j1 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        for tok in new[j0:j1]:
            if tok == "<end>" and op == "equal":
                continue  # NOTE: an unchanged end is the caption's end, not a word to show
            word = "&lt;end&gt;" if tok == "<end>" else html.escape(tok)
            parts.append(word if op == "equal" else f'<mark class="sat-changed">{word}</mark>')
    if steered.caption.truncated:
        parts.append(f'<span class="sat-cut">(cut at {len(steered.caption.words)} words)</span>')
    gone = [t for op, i0, i1, _, _ in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes()
            if op == "delete" for t in old[i0:i1]]
    note = f' <span class="sat-gone">(dropped: {html.escape(" ".join(gone))})</span>' if gone else ""
    r, c = steered.cell
    return (f'<div class="sat-steer" data-word="{steered.word}" data-cell="{r},{c}">'
            f'<b>If word {steered.word} looked here</b> (cell row {r + 1}, column {c + 1}): '
            f'<span class="sat-steered">{" ".join(parts)}</span>{note}</div>')
