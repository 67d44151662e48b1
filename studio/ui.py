"""The Gradio app: `create_app(soft=..., hard=...)` builds the Blocks; `serve` launches it.

Layout: the upload (an image with preview, paste and webcam), examples and collapsed settings on
the left; one column per model (soft, hard) with its caption as clickable word chips (and a copy
button), the photo under the current word's attention (a spotlight by default: attended regions at
full colour, the rest dimmed; a heatmap with a colour bar, or the plain photo, on request), a word
slider, the word's probability and a download button for the attention grid of every word. On
narrow screens the upload and the examples come first, then the results (scrolled to after a caption),
then the settings.

Words and linking: each column has its own slider (1 … T, the caption's tokens, `<end>` included);
clicking a chip selects that word too. While "Link" is on (the default), selecting word i in one
column shows word min(i, T_other) in the other: the same word number, or the other caption's last
token when it is shorter (LINK_RULE, shown on screen). Only user moves (the slider's `input`, a
chip's click) are handled, so setting the other slider never echoes back.

Steering (studio/steering.py): clicking a column's picture re-decodes that model's caption with the
selected word's attention forced onto the clicked point, shown as "If word t looked here: …" under
its caption with the changed words marked, and a reset; `/steer` is the same as an API.

The upload is `PhotoInput`, a `gr.Image` whose value is the uploaded file itself: every format goes
through `sat.image.load_image` (16-bit, CMYK, EXIF …), so unreadable files get our message.
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

from .components import api_error
from .inference import (DEFAULT_NO_REPEAT_NGRAM, DecodeOptions, ModelSlot, StudioResult, _strip_name,
                        caption_upload, describe_slot, load_slot, log, render_overlay, safe_caption,
                        write_grid)
from .steering import display_to_image, steer_html, steer_upload
from .notices import crop_note, notices_html

NAMES = ("soft", "hard")
CSS = """
.sat-caption { display: flex; flex-wrap: wrap; gap: 4px; font-size: 1.05rem; min-height: 2rem;
               align-items: center; }
.sat-chip { padding: 1px 8px; border-radius: 999px; background: var(--neutral-100, #eee);
            color: var(--neutral-800, #222); border: none; font: inherit; cursor: pointer; }
.sat-chip:hover { outline: 2px solid var(--color-accent, #f97316); }
.sat-chip.sat-end { font-family: monospace; opacity: .75; }
.sat-chip.sat-current { background: var(--color-accent, #f97316); color: white; }
.sat-copy { margin-left: auto; font-size: .8rem; padding: 1px 8px; border-radius: 6px; cursor: pointer;
            border: 1px solid var(--neutral-300, #ccc); background: transparent; color: inherit; }
.sat-warning { padding: 6px 10px; border-left: 4px solid #f59e0b; }
.sat-cut { font-style: italic; opacity: .75; }
.sat-legend { font-size: .85rem; opacity: .85; }
.sat-steer { font-size: 1rem; padding: 4px 8px; border-left: 4px solid var(--color-accent, #f97316); }
.sat-steer:empty { display: none; }
.sat-steer-row { align-items: center; }
.sat-steer-row button { flex-grow: 0 !important; align-self: center; }
.sat-changed { background: #fde68a; color: #111; padding: 0 3px; border-radius: 4px; }
.sat-gone { font-size: .85rem; opacity: .75; text-decoration: line-through; }
#examples .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }
#examples .thumbnail-item { min-width: 0; width: 100%; height: auto; aspect-ratio: 1; }
#examples .top-panel { display: none; }
#examples .grid-container { padding-top: 28px; }
#examples .grid-wrap { height: auto !important; min-height: 0 !important; }
#examples { flex-grow: 0 !important; }
.sat-bar { display: inline-block; width: 140px; height: 10px; vertical-align: middle; margin: 0 4px;
           background: linear-gradient(to right, #00007f, #0000ff, #007fff, #00ffff, #7fff7f, #ffff00,
           #ff7f00, #ff0000, #7f0000); }
@media (max-width: 768px) {
  /* phones: the upload and the examples, then the results, then the settings */
  #main-row { flex-direction: column; }
  #input-col { display: contents; }
  #upload, #caption-btn, #status, #examples { order: 0; }
  #soft-column { order: 1; } #hard-column { order: 2; } #settings { order: 3; }
}
"""
LINK_RULE = ("Link the columns: the other column shows the same word number "
             "(its last word when its caption is shorter)")
PROB_HELP = "the model's probability for this word, given the image and the words before it"
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
    """The caption as clickable word chips (``data-i``: the token's index), the token at ``index``
    (0-based) highlighted, then a "Copy" button for the sentence; a caption cut at the max length is
    followed by "(cut at N words)". Above it: the out-of-distribution notice and "the encoder sees"
    (`studio.notices`)."""
    if result is None or name not in result.outputs:
        return '<div class="sat-caption"></div>'
    cap = result.outputs[name].caption
    chips = []
    for i, (tok, p) in enumerate(zip(cap.tokens, cap.token_probs)):
        cls = "sat-chip" + (" sat-end" if tok == "<end>" else "") + (" sat-current" if i == index else "")
        chips.append(f'<button class="{cls}" data-i="{i}" title="{p:.0%}: {PROB_HELP}">{html.escape(tok)}</button>')
    if cap.truncated:
        chips.append(f'<span class="sat-cut">(cut at {len(cap.words)} words)</span>')
    text = html.escape(cap.text)
    chips.append(f'<button class="sat-copy" data-copy="{text}" title="Copy the caption">Copy</button>')
    # NOTE: the OOD notice and the encoder's labels ride with the chips: redrawn with them, no new component
    return notices_html(result, name) + f'<div class="sat-caption" data-caption="{text}">{"".join(chips)}</div>'


def word_info(result: StudioResult | None, name: str, index: int) -> str:
    """"Word i of T: **word** · 87%" and what the percentage is."""
    if result is None or name not in result.outputs:
        return ""
    cap = result.outputs[name].caption
    i = min(max(index, 0), len(cap.tokens) - 1)
    tok = cap.tokens[i]
    shown = "`<end>`" if tok == "<end>" else f"**{html.escape(tok)}**"
    return f"Word {i + 1} of {len(cap.tokens)}: {shown} · {cap.token_probs[i]:.0%}  \n<small>{PROB_HELP}</small>"


def legend(style: str, plain: bool, *, hard: bool, crop: str = "") -> str:
    """The lines under an overlay saying how to read it; ``crop``: this photo's `crop_note` (first,
    on its own line), "" for a square photo."""
    note = f'<div class="sat-crop">{html.escape(crop)}</div>' if crop else ""
    if plain:
        return f'<div class="sat-legend">{note}The plain image (untick "Show the plain image" for the attention).</div>'
    if style == "heatmap":
        text = 'Attention α: low<span class="sat-bar"></span>high (scaled per word).'
    else:
        text = "Bright: where the model looked for this word; dimmed: what it ignored."
    if hard:
        text += " Solid box: the one cell hard attention read (argmax α)."
    text += " Click the picture to see what the selected word becomes if the model looks there."
    return f'<div class="sat-legend">{note}{text}</div>'


class Studio:
    """The handlers behind the app, bound to the loaded models (shared by every session)."""

    def __init__(self, slots: Sequence[ModelSlot]):
        self.slots = list(slots)
        self.names = [s.name for s in self.slots]
        self.grid_dir = Path(tempfile.mkdtemp(prefix="sat-studio-grids-"))
        self.hard = {s.name: bool(s.ready and s.captioner.config.attention == "hard") for s in self.slots}

    # ------------------------------------------------------------------ one column's outputs
    def _column(self, result: StudioResult | None, name: str, index: int, opacity: float,
                smooth: float, *, slider: Any, style: str = "spotlight", plain: bool = False) -> list[Any]:
        """[chips, overlay, slider, word info] for one model at token ``index`` (0-based)."""
        if result is None or name not in result.outputs:
            return [caption_chips(None, name, 0), None,
                    gr.Slider(minimum=1, maximum=2, value=1, interactive=False, label="Word"), ""]
        img = render_overlay(result, name, index, opacity=opacity, smooth=smooth, style=style, plain=plain)
        return [caption_chips(result, name, index), img, slider, word_info(result, name, index)]

    # ------------------------------------------------------------------ events
    def on_caption(self, path: str | None, mode: str, beam: float, temperature: float,
                   max_len: float, opacity: float, smooth: float, length_penalty: float = 0.0,
                   no_repeat_ngram_size: float = DEFAULT_NO_REPEAT_NGRAM, style: str = "spotlight",
                   plain: bool = False) -> list[Any]:
        """Upload / example / Caption button → state, status, every column (chips, overlay, slider,
        word, grid; word 1), then every column's legend."""
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
            outs += self._column(result, name, 0, opacity, smooth, slider=slider, style=style, plain=plain)
            # NOTE: the grid comes with the caption (≈ 10 ms a word, `sat.viz.attention_grid_image`):
            # its download works as soon as the caption shows
            outs.append(self._grid_button(result, name, opacity, smooth, style))
        # NOTE: the legends last (after the columns), each with this photo's crop note
        return outs + self.legends(style, plain, result)

    def _grid_button(self, result: StudioResult | None, name: str, opacity: float, smooth: float,
                     style: str) -> Any:
        """Model ``name``'s download button, holding its freshly written attention grid PNG."""
        if result is None or name not in result.outputs:
            return gr.DownloadButton(value=None, interactive=False)
        self._prune_grids()
        folder = self.grid_dir / uuid.uuid4().hex[:12]
        path = write_grid(result, name, folder, opacity=opacity, smooth=smooth, style=style)
        return gr.DownloadButton(value=str(path), interactive=True)

    def on_grids(self, result: StudioResult | None, opacity: float, smooth: float,
                 style: str = "heatmap") -> list[Any]:
        """An overlay setting changed: rewrite each model's attention grid PNG in the new style."""
        return [self._grid_button(result, name, opacity, smooth, style) for name in self.names]

    def on_scrub(self, moved: str, result: StudioResult | None, positions: Sequence[float],
                 link: bool, opacity: float, smooth: float, style: str = "spotlight",
                 plain: bool = False, *, clicked: int | None = None) -> list[Any]:
        """Column ``moved`` selects a word (its slider moved, or chip ``clicked``, 0-based): redraw
        it, and when linked the others at the same word number, clamped to their last token."""
        pos = dict(zip(self.names, (int(p) for p in positions)))
        index = pos[moved] - 1 if clicked is None else int(clicked)
        outs: list[Any] = []
        for name in self.names:
            if result is None or name not in result.outputs or (name != moved and not link):
                outs += [gr.skip()] * 4
                continue
            i = min(max(index, 0), result.n_tokens(name) - 1)
            # NOTE: a moved slider is left alone (gr.skip) so a redraw never fights a drag.
            slider = gr.skip() if name == moved and clicked is None else gr.Slider(value=i + 1)
            outs += self._column(result, name, i, opacity, smooth, slider=slider, style=style, plain=plain)
        return outs

    def on_overlay_settings(self, result: StudioResult | None, positions: Sequence[float],
                            opacity: float, smooth: float, style: str = "spotlight",
                            plain: bool = False) -> list[Any]:
        """Overlay settings changed: redraw every column's overlay at its current word."""
        outs: list[Any] = []
        for name, p in zip(self.names, positions):
            if result is None or name not in result.outputs:
                outs.append(gr.skip())
                continue
            outs.append(render_overlay(result, name, int(p) - 1, opacity=opacity, smooth=smooth,
                                       style=style, plain=plain))
        return outs

    def legends(self, style: str, plain: bool, result: StudioResult | None = None) -> list[str]:
        """Every column's legend, with the photo's `crop_note` when ``result`` is given."""
        return [legend(style, plain, hard=self.hard[n], crop=crop_note(result, n, plain=plain))
                for n in self.names]

    def api_caption(self, path: str | None, mode: str, beam: float, temperature: float,
                    max_len: float, length_penalty: float = 0.0,
                    no_repeat_ngram_size: float = DEFAULT_NO_REPEAT_NGRAM) -> dict[str, Any]:
        """The `caption` API endpoint: both models' captions as JSON (bad input → gr.Error and one log
        line, `api_error`). The two decoding options come last, with the app's defaults, so
        5-argument clients keep working."""
        if not path:
            raise api_error("/caption", "no image given")
        opts = DecodeOptions(mode=mode, beam_size=beam, temperature=temperature, max_len=max_len,
                             length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
        try:
            return caption_upload(self.slots, path, opts).to_json()  # NOTE: checks opts first
        except ImageError as e:
            name = Path(path).name
            raise api_error("/caption", f"can't read {name}: {_strip_name(str(e), name)}") from None
        except ValueError as e:
            raise api_error("/caption", str(e)) from None
        except Exception as e:  # noqa: BLE001 — never an error without a message ({"error": null})
            log.exception("/caption failed")  # NOTE: a bug, not bad input: the traceback is logged once
            raise gr.Error(f"captioning failed: {type(e).__name__}: {e}", print_exception=False) from None

    def api_steer(self, path: str | None, name: str, word: float, x: float, y: float, mode: str,
                  beam: float, temperature: float, max_len: float, length_penalty: float = 0.0,
                  no_repeat_ngram_size: float = DEFAULT_NO_REPEAT_NGRAM) -> dict[str, Any]:
        """The `steer` API endpoint: model ``name``'s caption with word ``word`` (from 1) forced to
        look at pixel (x, y) of the image, in the /caption format (errors → gr.Error, one log line)."""
        if not path:
            raise api_error("/steer", "no image given")
        opts = DecodeOptions(mode=mode, beam_size=beam, temperature=temperature, max_len=max_len,
                             length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
        try:
            return steer_upload(self.slots, path, name, word, x, y, opts).to_json()
        except ImageError as e:
            file = Path(path).name
            raise api_error("/steer", f"can't read {file}: {_strip_name(str(e), file)}") from None
        except ValueError as e:
            raise api_error("/steer", str(e)) from None
        except Exception as e:  # noqa: BLE001
            log.exception("/steer failed")
            raise gr.Error(f"steering failed: {type(e).__name__}: {e}", print_exception=False) from None

    def on_steer(self, name: str, point: Sequence[float] | None, result: StudioResult | None,
                 path: str | None, position: float, mode: str, beam: float, temperature: float,
                 max_len: float, length_penalty: float = 0.0,
                 no_repeat_ngram_size: float = DEFAULT_NO_REPEAT_NGRAM) -> list[Any]:
        """A click at ``point`` (x, y of the shown picture) on column ``name`` while its word
        ``position`` (from 1) is selected → [the "if it looked here" line, the reset button, their row]."""
        if result is None or name not in result.outputs or not path or point is None:
            return self.on_steer_reset()
        x, y = display_to_image(result, float(point[0]), float(point[1]))
        opts = DecodeOptions(mode=mode, beam_size=beam, temperature=temperature, max_len=max_len,
                             length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
        try:
            steered = steer_upload(self.slots, path, name, int(position), x, y, opts)
        except (ImageError, ValueError) as e:
            log.warning("steering %s: %s", name, e)
            return [f'<div class="sat-steer sat-warning">⚠️ {html.escape(str(e))}</div>', gr.Button(visible=False),
                    gr.Row(visible=True)]
        return [steer_html(steered), gr.Button(visible=True), gr.Row(visible=True)]

    @staticmethod
    def on_steer_reset() -> list[Any]:
        """[the emptied steering line, the hidden reset button, the hidden row holding them]."""
        return [steer_html(None), gr.Button(visible=False), gr.Row(visible=False)]

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


SHARE_HINT = "* For a public gradio.live link: python app.py --share"
"""Printed at start-up instead of Gradio's "set `share=True` in `launch()`", which names code a user
of `python app.py` does not write (the app's switch is its --share flag)."""


def serve(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
          block: bool = True, quiet: bool = False) -> Any:
    """Launch with the app's CSS and file rules (examples folder allowed, 50 MB uploads), print
    where it runs (and, without ``share``, `SHARE_HINT`), then serve until stopped when ``block``."""
    # NOTE: quiet=True silences Gradio's start-up lines (its share hint among them); the app prints
    # its own. Gradio still prints the public URL itself when share is on.
    launched = demo.launch(server_name=host, server_port=port, share=share, css=CSS, quiet=True,
                           allowed_paths=[str(EXAMPLES)], max_file_size="50mb",
                           prevent_thread_lock=True, show_error=False, ssr_mode=False,
                           state_session_capacity=SESSIONS)
    if not quiet:
        print(f"* Running on local URL:  {demo.local_url}", flush=True)
        if not share:
            print(SHARE_HINT, flush=True)
    if block:
        demo.block_thread()
    return launched


__all__ = ["LINK_RULE", "SHARE_HINT", "Studio", "caption_chips", "create_app", "legend", "serve", "word_info"]
