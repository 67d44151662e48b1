"""The app's components and event wiring (`build`); the handlers live in `studio.ui.Studio`.

Events (all queued; captions share one concurrency group of size 1, rewriting the grid PNGs after a
settings change another; redraws run alongside):

- upload change (an upload, a paste, a webcam shot, a picked example) and the Caption button →
  caption with both models, and in the same event both attention-grid PNGs for the download
  buttons (PIL, ≈ 10 ms a word: the download works as soon as the caption shows) and the legends
  with the photo's crop note ("the sides are cut off", `studio.notices.crop_note`);
- a word slider's `input` (user moves only) or a click on a word chip → redraw that column, and
  the other when linked (same word number, clamped to its caption: `studio.ui.LINK_RULE`);
- overlay settings (style, plain image, opacity, smoothing) → redraw both overlays (and the
  legends); on release / change → rewrite the grids;
- a click on a column's picture → that model re-decodes with the selected word's attention forced
  onto the clicked point (the word picked last in the page, even before its round trip is back:
  studio/scripts.py) ("If word t looked here: …", studio/steering.py); its reset clears it, and
  so does a new caption. `/steer` (API only): image, model name, word (from 1), x, y, decoding options;
- `/caption` (API only, a hidden button): both models' captions as JSON; inputs: image, mode, beam,
  temperature, max length, then length penalty and no-repeat n-gram size (optional: slider defaults).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import gradio as gr

from sat.search import MAX_LENGTH_PENALTY

from .components import Number, PhotoInput, Radio, Slider
from .inference import DEFAULT_NO_REPEAT_NGRAM, MAX_LEN_LIMIT, MAX_NO_REPEAT_NGRAM, TITLES, trained_on
from .scripts import CHIP_JS, LINK_DEFAULT, SCROLL_JS, steer_word_js
from .ui import LINK_RULE

if TYPE_CHECKING:  # pragma: no cover
    from .ui import Studio

DELETE_CACHE = (900, 3600)
"""Gradio's `delete_cache` (every, older than; seconds): uploads older than an hour are deleted every
15 minutes. NOTE: uploads of the same bytes share one file (named by hash), so a file per request
piles up only for distinct images, and at most an hour's worth."""
CAPTION_CONCURRENCY = 1
"""Captions run one at a time: a caption already uses every core through torch's thread pool."""
INTRO = """# SAT Studio
*Show, Attend and Tell* (Xu et al., 2015): each word of the caption comes with the part of the
image the decoder attended to. Upload, paste or snap an image (or pick an example), then click a
word to see where the model looked for it.
"""


def _header(studio: "Studio") -> str:
    scenes = [s.title for s in studio.slots if s.ready and trained_on(s.captioner) == "scenes"]
    if not scenes:
        return INTRO
    return INTRO + (f"\n> ⚠️ **{' and '.join(scenes)} weights were trained on synthetic scenes** "
                    "(coloured shapes on plain backgrounds). On a photo they still answer in "
                    "shapes and colours: they are not a photo captioning model.\n")


def build(studio: "Studio", descriptions: Sequence[str], examples: Sequence[str]) -> gr.Blocks:
    """Lay out the components and wire every event to ``studio``'s handlers."""
    names = studio.names
    cols: dict[str, dict[str, gr.components.Component]] = {}
    with gr.Blocks(title="SAT Studio", analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        # NOTE: a result holds the display image (≈ 1 MB); Gradio drops it when the tab closes,
        # and the time limit covers tabs left open.
        state = gr.State(None, time_to_live=3600)
        gr.Markdown(_header(studio), elem_id="intro")
        with gr.Row(equal_height=False, elem_id="main-row"):
            with gr.Column(scale=1, min_width=280, elem_id="input-col"):
                upload = PhotoInput(label="Image (upload, paste or webcam)",
                                    type="filepath", height=260, elem_id="upload")
                caption_btn = gr.Button("Caption again", variant="primary", elem_id="caption-btn")
                status = gr.Markdown("Upload an image (or pick an example) to caption it.",
                                     elem_id="status")
                gallery = gr.Gallery(value=list(examples), label="Examples (click one)", columns=4,
                                     height="auto", allow_preview=False, interactive=False,
                                     visible=bool(examples), elem_id="examples")
                with gr.Column(elem_id="settings"):
                    with gr.Accordion("View", open=False):
                        style = gr.Radio([("Spotlight", "spotlight"), ("Heatmap", "heatmap")],
                                         value="spotlight", label="Attention drawn as", elem_id="style")
                        plain = gr.Checkbox(False, label="Show the plain image", elem_id="plain")
                        opacity = gr.Slider(0.0, 1.0, value=0.7, step=0.05, elem_id="opacity",
                                            label="Strength (dimming / heatmap opacity)")
                        smooth = gr.Slider(0.0, 2.0, value=0.5, step=0.05, elem_id="smooth",
                                           label="Smoothing (Gaussian σ, in grid cells)")
                        link = gr.Checkbox(LINK_DEFAULT, label=LINK_RULE, elem_id="link")
                    with gr.Accordion("Decoding", open=False):
                        # NOTE: the API's inputs too: their own checks' errors are one log line (studio.components)
                        mode = Radio(["beam", "greedy", "sample"], value="beam", label="Search",
                                        elem_id="mode")
                        beam = Slider(1, 10, value=3, step=1, label="Beam size (beam search)")
                        temperature = Slider(0.1, 2.0, value=1.0, step=0.05,
                                                label="Temperature (sampling)")
                        max_len = Slider(1, MAX_LEN_LIMIT, value=20, step=1,
                                            label="Max length (words)")
                        length_penalty = Slider(0.0, MAX_LENGTH_PENALTY, value=0.0, step=0.1,
                                                   label="Length penalty α (beam search; 0 = off)",
                                                   elem_id="length-penalty")
                        no_repeat = Slider(0, MAX_NO_REPEAT_NGRAM, value=DEFAULT_NO_REPEAT_NGRAM, step=1,
                                              label="No repeated n-grams of n words (0 = off)", elem_id="no-repeat")
            for name, text in zip(names, descriptions):
                slot = next(s for s in studio.slots if s.name == name)
                with gr.Column(scale=2, min_width=300, elem_id=f"{name}-column"):
                    gr.Markdown(f"### {TITLES.get(name, name)}")
                    c = cols[name] = {}
                    c["chips"] = gr.HTML('<div class="sat-caption"></div>', elem_id=f"{name}-caption",
                                         js_on_load=CHIP_JS)
                    c["overlay"] = gr.Image(label=f"{name} attention", type="pil", format="png",
                                            interactive=False, height=400, elem_id=f"{name}-overlay")
                    # NOTE: hidden while empty: an empty HTML component still takes ~60 px
                    with gr.Row(equal_height=False, visible=False, elem_classes=["sat-steer-row"],
                                elem_id=f"{name}-steer-row") as c["steer_row"]:
                        c["steer"] = gr.HTML('<div class="sat-steer"></div>', elem_id=f"{name}-steer")
                        c["reset"] = gr.Button("Reset gaze", size="sm", visible=False, scale=0,
                                               min_width=100, elem_id=f"{name}-steer-reset")
                    c["legend"] = gr.HTML(studio.legends("spotlight", False)[names.index(name)],
                                          elem_id=f"{name}-legend")
                    # NOTE: buttons=[]: the reset button would move it without an `input` event.
                    c["slider"] = gr.Slider(1, 2, value=1, step=1, label="Word", interactive=False,
                                            buttons=[], elem_id=f"{name}-slider")
                    c["word"] = gr.Markdown("", elem_id=f"{name}-word")
                    c["grid"] = gr.DownloadButton("Download attention grid (PNG)", interactive=False,
                                                  size="sm", elem_id=f"{name}-grid")
                    gr.Markdown(text, elem_id=f"{name}-info")
                    if slot.ready and slot.captioner.card:
                        with gr.Accordion("Model card", open=False):
                            gr.Markdown(slot.captioner.card)
        api_json = gr.JSON(visible=False)
        api_btn = gr.Button(visible=False)

        sliders = [cols[n]["slider"] for n in names]
        grids = [cols[n]["grid"] for n in names]
        view = [opacity, smooth, style, plain]
        caption_inputs = [upload, mode, beam, temperature, max_len, opacity, smooth, length_penalty,
                          no_repeat, style, plain]
        caption_outputs: list[gr.components.Component] = [state, status]
        for n in names:
            caption_outputs += [cols[n][k] for k in ("chips", "overlay", "slider", "word", "grid")]
        caption_outputs += [cols[n]["legend"] for n in names]
        gr.on([upload.change, caption_btn.click], studio.on_caption, caption_inputs, caption_outputs,
              api_visibility="private", concurrency_id="caption", concurrency_limit=CAPTION_CONCURRENCY,
              trigger_mode="always_last").then(None, js=SCROLL_JS, api_visibility="private")

        scrub_outputs = [cols[n][k] for n in names for k in ("chips", "overlay", "slider", "word")]
        for name in names:
            def scrub(result, link_on, op, sm, st, pl, *positions, _moved=name):
                return studio.on_scrub(_moved, result, positions, link_on, op, sm, st, pl)

            # NOTE: the event data must be a positional parameter for Gradio to fill it in
            def click(evt: gr.EventData, result, link_on, op, sm, st, pl, *positions, _moved=name):
                return studio.on_scrub(_moved, result, positions, link_on, op, sm, st, pl,
                                       clicked=int(getattr(evt, "index", 0)))

            # NOTE: show_progress="hidden": a redraw takes tens of ms; a progress veil over both
            # columns on every slider step would flicker.
            cols[name]["slider"].input(scrub, [state, link, *view, *sliders], scrub_outputs,
                                       api_visibility="private", trigger_mode="always_last",
                                       show_progress="hidden")
            cols[name]["chips"].click(click, [state, link, *view, *sliders], scrub_outputs,
                                      api_visibility="private", trigger_mode="always_last",
                                      show_progress="hidden")

        def redraw(result, op, sm, st, pl, *positions):
            return [*studio.on_overlay_settings(result, positions, op, sm, st, pl), *studio.legends(st, pl, result)]

        gr.on([opacity.change, smooth.change, style.change, plain.change], redraw, [state, *view, *sliders],
              [cols[n]["overlay"] for n in names] + [cols[n]["legend"] for n in names],
              api_visibility="private", trigger_mode="always_last", show_progress="hidden")
        gr.on([opacity.release, smooth.release, style.change], studio.on_grids, [state, opacity, smooth, style],
              grids, api_visibility="private", trigger_mode="always_last", show_progress="minimal",
              concurrency_id="grids", concurrency_limit=1)

        def pick_example(evt: gr.SelectData) -> str:
            return examples[evt.index]

        decoding = [mode, beam, temperature, max_len, length_penalty, no_repeat]
        for name in names:
            steer_out = [cols[name]["steer"], cols[name]["reset"], cols[name]["steer_row"]]

            # NOTE: SelectData.index of an image is the clicked pixel (x, y) of the picture shown
            def steer_click(evt: gr.SelectData, result, path, position, *opts, _name=name):
                return studio.on_steer(_name, evt.index, result, path, position, *opts)

            # NOTE: js: a click made before a chip's round trip is back steers the chip's word (studio/scripts.py)
            steer_in = [state, upload, cols[name]["slider"], *decoding]
            cols[name]["overlay"].select(steer_click, steer_in, steer_out,
                                         js=steer_word_js(name, position=steer_in.index(cols[name]["slider"])),
                                         api_visibility="private", concurrency_id="caption",
                                         concurrency_limit=CAPTION_CONCURRENCY, trigger_mode="always_last")
            cols[name]["reset"].click(studio.on_steer_reset, None, steer_out, api_visibility="private")
            gr.on([upload.change, caption_btn.click], studio.on_steer_reset, None, steer_out,
                  api_visibility="private")

        gallery.select(pick_example, None, upload, api_visibility="private")
        # NOTE: the two newer options last: clients that send the first five get the sliders' defaults
        api_btn.click(studio.api_caption, [upload, mode, beam, temperature, max_len, length_penalty, no_repeat],
                      api_json, api_name="caption", concurrency_id="caption", concurrency_limit=CAPTION_CONCURRENCY)
        steer_name = gr.Textbox(names[0], visible=False)  # NOTE: free text: a bad name gets our message
        steer_word, steer_x, steer_y = Number(1, visible=False), Number(0, visible=False), Number(0, visible=False)
        gr.Button(visible=False).click(studio.api_steer, [upload, steer_name, steer_word, steer_x, steer_y, *decoding],
                                       api_json, api_name="steer", concurrency_id="caption",
                                       concurrency_limit=CAPTION_CONCURRENCY)
    return demo
