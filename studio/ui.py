"""The Gradio app: `create_app(soft=..., hard=...)` builds the Blocks; `serve` launches it.

Layout: the upload, examples and controls on the left; one column per model (soft, hard) with its
caption as word chips, the photo under the current word's attention, a word slider, the word's
probability and a download button for the attention grid of every word.

Word sliders and linking: each column has its own slider (1 … T, the caption's tokens, `<end>`
included). While "Link the word sliders" is on (the default) and both captions have the same
number of tokens, moving either slider moves the other to the same position; when the lengths
differ each slider moves alone, so no column ever points past its own caption. Only user moves
(the slider's `input` event) are handled, so setting the other slider never echoes back.

The upload is a `gr.File`, not a `gr.Image`: Gradio then hands us the file untouched and every
format goes through `sat.image.load_image`, so unreadable files get our message, not a crash.
"""
from __future__ import annotations

import html
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import gradio as gr

from sat.captioner import Captioner
from sat.image import ImageError
from sat.paths import EXAMPLES, WEIGHTS

from .inference import (DEFAULT_NO_REPEAT_NGRAM, DecodeOptions, ModelSlot, StudioResult, _strip_name,
                        caption_upload, describe_slot, load_slot, log, render_overlay, safe_caption,
                        write_grid)

NAMES = ("soft", "hard")
CSS = """
.sat-caption { display: flex; flex-wrap: wrap; gap: 4px; font-size: 1.05rem; min-height: 2rem; }
.sat-chip { padding: 1px 8px; border-radius: 999px; background: var(--neutral-100, #eee);
            color: var(--neutral-800, #222); }
.sat-chip.sat-end { font-family: monospace; opacity: .75; }
.sat-chip.sat-current { background: var(--color-accent, #f97316); color: white; }
.sat-warning { padding: 6px 10px; border-left: 4px solid #f59e0b; }
.sat-cut { font-style: italic; opacity: .75; }
"""
GRID_MAX_AGE_S = 3600
QUEUE_SIZE = 256
"""Requests waiting in Gradio's queue; beyond it a request gets Gradio's 'Queue is full, try again'
(HTTP 503). NOTE: a waiting request holds only its event (the upload is already a file on disk, at
most 50 MB): memory is bounded by the captions running (one at a time) and by SESSIONS, not by this."""
SESSIONS = 256
"""Sessions whose state Gradio keeps (least recently used dropped first; Gradio's default is 10,000).
NOTE: every session, an API client's too, holds a copy of every component's config (≈ tens of KB)
and its caption result (the display image, ≈ 1 MB): at 10,000 the app's memory grew with every
new client (bench/load.py); 256 bounds it to a few hundred MB."""


def _example_paths(folder: Path = EXAMPLES) -> list[str]:
    """Example photos; the attention grids kept beside them (attention_*.png) are not examples."""
    exts = {".jpg", ".jpeg", ".png", ".webp"}
    if not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.glob("*")
                  if p.suffix.lower() in exts and not p.name.startswith("attention_"))


def caption_chips(result: StudioResult | None, name: str, index: int) -> str:
    """The caption as word chips, the token at ``index`` (0-based) highlighted; a caption cut at the
    max length is followed by "(cut at N words)"."""
    if result is None or name not in result.outputs:
        return '<div class="sat-caption"></div>'
    cap = result.outputs[name].caption
    chips = []
    for i, (tok, p) in enumerate(zip(cap.tokens, cap.token_probs)):
        cls = "sat-chip" + (" sat-end" if tok == "<end>" else "") + (" sat-current" if i == index else "")
        chips.append(f'<span class="{cls}" title="p = {p:.3f}">{html.escape(tok)}</span>')
    if cap.truncated:
        chips.append(f'<span class="sat-cut">(cut at {len(cap.words)} words)</span>')
    text = html.escape(cap.text)
    return f'<div class="sat-caption" data-caption="{text}">{"".join(chips)}</div>'


def word_info(result: StudioResult | None, name: str, index: int) -> str:
    if result is None or name not in result.outputs:
        return ""
    cap = result.outputs[name].caption
    i = min(max(index, 0), len(cap.tokens) - 1)
    tok = cap.tokens[i]
    shown = "`<end>`" if tok == "<end>" else f"**{html.escape(tok)}**"
    return f"Word {i + 1} of {len(cap.tokens)}: {shown} · p = {cap.token_probs[i]:.3f}"


class Studio:
    """The handlers behind the app, bound to the loaded models (shared by every session)."""

    def __init__(self, slots: Sequence[ModelSlot]):
        self.slots = list(slots)
        self.names = [s.name for s in self.slots]
        self.grid_dir = Path(tempfile.mkdtemp(prefix="sat-studio-grids-"))

    # ------------------------------------------------------------------ one column's outputs
    def _column(self, result: StudioResult | None, name: str, index: int, opacity: float,
                smooth: float, *, slider: Any) -> list[Any]:
        """[chips, overlay, slider, word info] for one model at token ``index`` (0-based)."""
        if result is None or name not in result.outputs:
            return [caption_chips(None, name, 0), None,
                    gr.Slider(minimum=1, maximum=2, value=1, interactive=False, label="Word"), ""]
        img = render_overlay(result, name, index, opacity=opacity, smooth=smooth)
        return [caption_chips(result, name, index), img, slider, word_info(result, name, index)]

    # ------------------------------------------------------------------ events
    def on_caption(self, path: str | None, mode: str, beam: float, temperature: float,
                   max_len: float, opacity: float, smooth: float, length_penalty: float = 0.0,
                   no_repeat_ngram_size: float = DEFAULT_NO_REPEAT_NGRAM) -> list[Any]:
        """Upload / example / Caption button → state, status and every column (word 1)."""
        # NOTE: raw values: DecodeOptions.checked parses them inside safe_caption's error handling
        opts = DecodeOptions(mode=mode, beam_size=beam, temperature=temperature, max_len=max_len,
                             length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
        result, message = safe_caption(self.slots, path, opts)
        if result is not None:
            notes = [f"{s.title}: {'no weights loaded' if not s.ready else result.errors[s.name]}"
                     for s in self.slots if s.name in result.errors]
            message = (f"Captioned {Path(str(path)).name} ({result.size[0]}×{result.size[1]})" +
                       (f"; {'; '.join(notes)}" if notes else "") + ".")
        outs: list[Any] = [result, message]
        for name in self.names:
            n = result.n_tokens(name) if result is not None else 0
            # NOTE: Gradio needs minimum < maximum; a one-token caption gets a disabled 1–2 slider.
            slider = gr.Slider(minimum=1, maximum=max(n, 2), value=1, step=1, interactive=n > 1,
                               label=f"Word (1–{n})" if n else "Word")
            outs += self._column(result, name, 0, opacity, smooth, slider=slider)
            outs.append(gr.DownloadButton(value=None, interactive=False))
        return outs

    def on_grids(self, result: StudioResult | None, opacity: float, smooth: float) -> list[Any]:
        """After a caption (or an overlay setting change): write each model's attention grid PNG."""
        self._prune_grids()
        outs: list[Any] = []
        for name in self.names:
            if result is None or name not in result.outputs:
                outs.append(gr.DownloadButton(value=None, interactive=False))
                continue
            folder = self.grid_dir / uuid.uuid4().hex[:12]
            path = write_grid(result, name, folder, opacity=opacity, smooth=smooth)
            outs.append(gr.DownloadButton(value=str(path), interactive=True))
        return outs

    def on_scrub(self, moved: str, result: StudioResult | None, positions: Sequence[float],
                 link: bool, opacity: float, smooth: float) -> list[Any]:
        """A word slider moved: redraw that column, and the others too when they are linked."""
        pos = dict(zip(self.names, (int(p) for p in positions)))
        index = pos[moved] - 1
        lengths = {n: result.n_tokens(n) if result is not None else 0 for n in self.names}
        linked = bool(link) and len(set(lengths.values())) == 1
        outs: list[Any] = []
        for name in self.names:
            if result is None or name not in result.outputs or (name != moved and not linked):
                outs += [gr.skip()] * 4
                continue
            # NOTE: the moved slider is left alone (gr.skip) so a redraw never fights a drag.
            slider = gr.skip() if name == moved else gr.Slider(value=index + 1)
            outs += self._column(result, name, index, opacity, smooth, slider=slider)
        return outs

    def on_overlay_settings(self, result: StudioResult | None, positions: Sequence[float],
                            opacity: float, smooth: float) -> list[Any]:
        """Opacity / smoothing changed: redraw every column's overlay at its current word."""
        outs: list[Any] = []
        for name, p in zip(self.names, positions):
            if result is None or name not in result.outputs:
                outs.append(gr.skip())
                continue
            outs.append(render_overlay(result, name, int(p) - 1, opacity=opacity, smooth=smooth))
        return outs

    def api_caption(self, path: str | None, mode: str, beam: float, temperature: float,
                    max_len: float, length_penalty: float = 0.0,
                    no_repeat_ngram_size: float = DEFAULT_NO_REPEAT_NGRAM) -> dict[str, Any]:
        """The `caption` API endpoint: both models' captions as JSON (errors → gr.Error). The two
        decoding options come last, with the app's defaults, so 5-argument clients keep working."""
        if not path:
            raise gr.Error("no image given")
        opts = DecodeOptions(mode=mode, beam_size=beam, temperature=temperature, max_len=max_len,
                             length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
        try:
            return caption_upload(self.slots, path, opts).to_json()  # NOTE: checks opts first
        except ImageError as e:
            name = Path(path).name
            raise gr.Error(f"can't read {name}: {_strip_name(str(e), name)}") from None
        except ValueError as e:
            raise gr.Error(str(e)) from None
        except Exception as e:  # noqa: BLE001 — never an error without a message ({"error": null})
            log.exception("/caption failed")
            raise gr.Error(f"captioning failed: {type(e).__name__}: {e}") from None

    def _prune_grids(self) -> None:
        cutoff = time.time() - GRID_MAX_AGE_S
        for png in self.grid_dir.glob("*/*.png"):
            if png.stat().st_mtime < cutoff:
                png.unlink(missing_ok=True)


Weights = str | Path | Captioner | ModelSlot | None


def create_app(soft: Weights = WEIGHTS / "soft",
               hard: Weights = WEIGHTS / "hard", *,
               device: str | None = None, warmup: bool = True,
               examples: Sequence[str | Path] | None = None, queue_size: int = QUEUE_SIZE) -> gr.Blocks:
    """Build the app. ``soft`` / ``hard``: a weights folder, an ``hf://`` spec, a loaded Captioner or
    ModelSlot (`load_slot`), or None. A column whose weights cannot be loaded shows why instead of
    failing the app."""
    from .layout import build

    slots = [load_slot("soft", soft, device=device, warmup=warmup),
             load_slot("hard", hard, device=device, warmup=warmup)]
    paths = [str(p) for p in examples] if examples is not None else _example_paths()
    demo = build(Studio(slots), [describe_slot(s) for s in slots], paths)
    demo.queue(default_concurrency_limit=4, max_size=queue_size)
    return demo


def serve(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
          block: bool = True, quiet: bool = False) -> Any:
    """Launch with the app's CSS and file rules (examples folder allowed, 50 MB uploads)."""
    return demo.launch(server_name=host, server_port=port, share=share, css=CSS, quiet=quiet,
                       allowed_paths=[str(EXAMPLES)], max_file_size="50mb",
                       prevent_thread_lock=not block, show_error=False, ssr_mode=False,
                       state_session_capacity=SESSIONS)


__all__ = ["Studio", "caption_chips", "create_app", "serve", "word_info"]
