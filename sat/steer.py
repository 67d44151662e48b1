"""Steering the gaze: re-decode a caption with the attention of chosen words forced onto a cell.

    cap = Captioner.load("assets/weights/hard")
    out = cap.caption(image, mode="greedy", force={3: (7, 2)})   # word 3 looks at row 7, column 2

Word indices ``t`` count the caption's tokens from 1 (word 1 is the first word; ``len(words) + 1``
is the ``<end>`` step, so forcing there can make the model go on). The same counting is used by
`Captioner.caption(force=…)`, the app's ``/steer`` endpoint and `train.grounding`'s steer score.

What a forced step does:

* the forced map replaces α_t of that word: **hard** attention (and its test rule "argmax") reads
  exactly that cell — the map is one-hot; every other kind gets a normalised Gaussian of
  ``SIGMA`` = 1 cell centred on the cell (the paper's soft attention never looks at one cell only).
  The context vector is what the attention kind reads from that α (`Attention.read`); the
  Transformer replaces the cross-attention weights of every head in every layer by the map;
* words **before** t are teacher-forced from the original caption (decoded first with the same
  settings). NOTE: re-decoding would not keep them under beam search: the forced step changes the
  scores of whole beams, so the winning beam may differ already before t. Their probabilities and
  attention maps are those of the original caption (nothing before t sees the forcing);
* from step t on the search (greedy / beam / sample with the same seed) runs as usual.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from .decoders.base import Decoder, Memory, State
from .search import Hypothesis, _lp, decode

SIGMA = 1.0
"""Width (in grid cells) of the Gaussian a non-hard model's forced map has."""

Cell = tuple[int, int]


def force_map(grid: tuple[int, int], cell: Cell, *, hard: bool, sigma: float = SIGMA) -> torch.Tensor:
    """(h·w,) float32 attention map summing to 1: one-hot at ``cell`` (hard) or a Gaussian of
    ``sigma`` cells centred on it (row-major over the grid, like α)."""
    gh, gw = grid
    r, c = check_cell(cell, grid)
    if hard:
        m = torch.zeros(gh, gw)
        m[r, c] = 1.0
    else:
        ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32),
                                indexing="ij")  # (h, w) each
        m = torch.exp(-((ys - r) ** 2 + (xs - c) ** 2) / (2 * sigma ** 2))
    return (m / m.sum()).reshape(-1)  # (h, w) → (L,)


def check_cell(cell: Any, grid: tuple[int, int]) -> Cell:
    """(row, col) as ints inside the grid, else a one-line ValueError."""
    try:
        r, c = (int(v) for v in cell)
    except (TypeError, ValueError):
        raise ValueError(f"a forced cell must be (row, col), got {cell!r}") from None
    if not (0 <= r < grid[0] and 0 <= c < grid[1]):
        raise ValueError(f"cell (row {r}, col {c}) is outside the {grid[0]}×{grid[1]} attention grid "
                         f"(rows 0–{grid[0] - 1}, columns 0–{grid[1] - 1})")
    return r, c


def check_force(force: Mapping[Any, Any], grid: tuple[int, int], n_tokens: int) -> dict[int, Cell]:
    """Validate ``{t: (row, col)}`` (t from 1 to ``n_tokens``, the original caption's tokens with
    <end>) → the same with int keys; one-line ValueError naming what is wrong."""
    if not isinstance(force, Mapping) or not force:
        raise ValueError("force must be a non-empty {word index: (row, col)} mapping")
    out = {}
    for t, cell in force.items():
        if isinstance(t, bool) or not isinstance(t, int):
            raise ValueError(f"word index must be an int, got {t!r}")
        if not 1 <= t <= n_tokens:
            raise ValueError(f"word index {t} is outside the caption: it has {n_tokens} tokens "
                             f"(words 1–{n_tokens - 1}, then <end> at {n_tokens}); indices count from 1")
        out[t] = check_cell(cell, grid)
    return out


def cell_at(size: tuple[int, int], x: float, y: float, *, grid: tuple[int, int], image_size: int,
            resize: str = "crop", crop_pct: float = 1.0) -> Cell:
    """The grid cell under pixel (x, y) of a (W, H) image, through the crop / resize the model's
    preprocessing applies (`sat.image.square_frame`); a point the model does not see → ValueError."""
    from .image import square_frame
    from .viz import square_box

    W, H = size
    if not (0 <= x < W and 0 <= y < H):
        raise ValueError(f"point ({x:g}, {y:g}) is outside the {W}×{H} image")
    nw, nh, ox, oy = square_frame((W, H), image_size=image_size, resize=resize, crop_pct=crop_pct)
    u, v = (x + 0.5) * nw / W + ox, (y + 0.5) * nh / H + oy  # pixel centre → the model's square
    if not (0 <= u < image_size and 0 <= v < image_size):
        box = square_box((W, H), resize=resize, image_size=image_size, crop_pct=crop_pct)
        raise ValueError(f"point ({x:g}, {y:g}) is outside the part of the image the model sees "
                         f"(x {box[0]}–{box[2] - 1}, y {box[1]}–{box[3] - 1})" if box else
                         f"point ({x:g}, {y:g}) is outside the part of the image the model sees")
    return int(v * grid[0] // image_size), int(u * grid[1] // image_size)


@dataclass
class SteeredDecoder:
    """A decoder as `sat.search` drives it, with the prefix teacher-forced and chosen steps' α forced.

    Search calls `step` once per position for every row (beam rows included), so a call counter is
    the 0-based position. Built per request: it holds that counter.
    """
    decoder: Decoder
    prefix: list[int]
    """Token ids of the words before the first forced step, in order."""
    maps: dict[int, torch.Tensor]
    """0-based step → (L,) forced attention map."""
    calls: int = field(default=0, init=False)

    def prepare(self, feats: torch.Tensor) -> Memory:
        return self.decoder.prepare(feats)

    def init_state(self, memory: Memory) -> State:
        return self.decoder.init_state(memory)

    def step(self, tokens: torch.Tensor, state: State, memory: Memory):
        t, self.calls = self.calls, self.calls + 1
        force = self.maps.get(t)
        if force is not None:
            force = force.to(tokens.device)[None].expand(tokens.size(0), -1)  # (L,) → (B, L)
        logits, alpha, state = self.decoder.step(tokens, state, memory, force=force)  # (B, V), (B, L)
        if t < len(self.prefix):  # only the original word may follow: search cannot leave the prefix
            keep = logits[:, self.prefix[t]].clone()
            logits = torch.full_like(logits, float("-inf"))
            logits[:, self.prefix[t]] = keep
        return logits, alpha, state


def steer_hypothesis(decoder: Decoder, feats: torch.Tensor, original: Hypothesis, force: Mapping[int, Any], *,
                     grid: tuple[int, int], hard: bool, mode: str = "beam", beam_size: int = 3,
                     max_len: int = 20, temperature: float = 1.0, length_penalty: float = 0.0,
                     no_repeat_ngram_size: int = 0, generator: torch.Generator | None = None,
                     pad_id: int = 0, start_id: int = 1, end_id: int = 2, unk_id: int | None = 3) -> Hypothesis:
    """Re-decode one image's caption (feats (1, L, D), `original` its caption under the same
    settings) with ``force = {t: (row, col)}`` (t from 1): see the module docstring."""
    if feats.size(0) != 1:
        raise ValueError(f"steering decodes one image at a time, got a batch of {feats.size(0)}")
    force = check_force(force, grid, len(original.tokens))
    first = min(force) - 1  # 0-based first forced step
    maps = {t - 1: force_map(grid, cell, hard=hard) for t, cell in force.items()}
    steered = SteeredDecoder(decoder, prefix=list(original.tokens[:first]), maps=maps)
    hyp = decode(steered, feats, mode=mode, beam_size=beam_size, max_len=max_len, temperature=temperature,
                 length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                 generator=generator, pad_id=pad_id, start_id=start_id, end_id=end_id, unk_id=unk_id)[0]
    # NOTE: the search saw probability 1 for each teacher-forced word; report the model's own
    lps = list(original.token_logprobs[:first]) + list(hyp.token_logprobs[first:])
    n = len(hyp.tokens)
    return Hypothesis(hyp.tokens, hyp.alphas, lps, sum(lps), sum(lps) / _lp(n, length_penalty), hyp.truncated)
