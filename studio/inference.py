"""The app's work, free of any UI: load the two models, caption an upload with both, render overlays.

`studio.ui` wires these functions to Gradio components; tests call them directly. Every image goes
through `sat.image.load_image` (one decoding path, our error messages) and every overlay through
`sat.viz` (one attention-drawing implementation).

    slots = [load_slot("soft", "assets/weights/soft"), load_slot("hard", "hf://owner/sat-hard")]
    result = caption_upload(slots, "photo.jpg", DecodeOptions(mode="beam", beam_size=3))
    render_overlay(result, "soft", 2, opacity=0.6, smooth=0.5)   # PIL image, word 3's attention
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from sat.captioner import Caption, Captioner
from sat.image import ImageError, load_image
from sat.paths import REPO
from sat.search import MAX_LENGTH_PENALTY
from sat.viz import DEFAULT_SMOOTH, attention_panel, save_attention_grid
from sat.weights import WeightsError

log = logging.getLogger("sat.studio")
DISPLAY_SIDE = 512
"""Overlays are drawn on a copy of the photo whose long side is at most this (display only; the
model sees the full image) ..."""
DISPLAY_MIN_SIDE = 384
"""... and at least this, so a small picture (a 224-px scene) still shows a readable map."""
MODES = ("beam", "greedy", "sample")
MAX_LEN_LIMIT = 50
MAX_NO_REPEAT_NGRAM = 10
"""The app's largest no-repeat n-gram size (its slider's range; the library takes up to 100)."""
DEFAULT_NO_REPEAT_NGRAM = 4
"""The app's no-repeat n-gram size. NOTE: measured on the scenes test split (1 000 images, soft model,
beam 3, `python -m train evaluate --no-repeat-ngram-size N`): BLEU-4 0.630 (off), 0.552 (n = 2: the
model is pushed off its grammar, 9 captions run into max_len), 0.631 (3), 0.641 (4); 4 also leaves
"a small red circle and a small red square" alone, which n = 3 would forbid."""
TITLES = {"soft": "Soft attention", "hard": "Hard attention"}


@dataclass
class ModelSlot:
    """One column of the app: a loaded Captioner, or the reason it could not be loaded."""

    name: str
    spec: str
    captioner: Captioner | None = None
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.captioner is not None

    @property
    def title(self) -> str:
        return TITLES.get(self.name, self.name)


def load_slot(name: str, spec: "str | Path | Captioner | ModelSlot | None", *,
              device: str | None = None, warmup: bool = True) -> ModelSlot:
    """Resolve + load a weights spec; a failure is kept as a message for the UI, never raised."""
    if isinstance(spec, ModelSlot):
        return spec
    if isinstance(spec, Captioner):
        return ModelSlot(name, spec.source or "(in memory)", captioner=spec)
    if spec is None or str(spec) == "":
        return ModelSlot(name, "", error="no weights folder given")
    # NOTE: loading, the warm-up caption and the column's description share one handler: whatever
    # fails in one column is shown there, and the other column goes on serving.
    try:
        cap = Captioner.load(spec, device=device)
        slot = ModelSlot(name, str(spec), captioner=cap)
        if warmup:
            # NOTE: the first forward pass allocates and picks kernels (hundreds of ms); pay it at
            # start-up instead of on the first person's request.
            size = cap.config.image_size
            cap.caption(Image.new("RGB", (size, size), (127, 127, 127)), mode="greedy", max_len=3)
        describe_slot(slot)
    except (WeightsError, ValueError, OSError) as e:
        # NOTE: ValueError covers config.json values this version rejects (ModelConfig checks).
        return ModelSlot(name, str(spec), error=str(e))
    except Exception as e:  # noqa: BLE001 — e.g. a warm-up on weights that load but do not run
        log.exception("loading the %s model from %s failed", name, spec)
        return ModelSlot(name, str(spec), error=f"{type(e).__name__}: {e}")
    return slot


# ----------------------------------------------------------------------------- describing weights

def pretty_spec(spec: str) -> str:
    """A weights spec as people should read it: paths inside the repository made relative."""
    if spec.startswith("hf://"):
        return spec
    try:
        return str(Path(spec).resolve().relative_to(REPO))
    except (ValueError, OSError):
        return spec


def trained_on(cap: Captioner) -> str:
    """What the weights were trained on, from metrics.json or the model card's "Data:" line."""
    dataset = str(cap.metrics.get("dataset", "")).strip()
    if not dataset:
        m = re.search(r"^- Data: `([^`]+)`", cap.card, flags=re.MULTILINE)
        dataset = m.group(1) if m else ""
    return dataset


def describe_slot(slot: ModelSlot) -> str:
    """Markdown: which weights this column uses and what they were trained on (or why it is empty)."""
    if not slot.ready:
        env = f"SAT_WEIGHTS_{slot.name.upper()}"
        return (f"⚠️ **{slot.title} is not available.** {slot.error}.  \n"
                f"Point `{env}` or `--{slot.name}` at a weights folder or `hf://owner/repo[@revision]`.")
    cap = slot.captioner
    assert cap is not None
    cfg = cap.config
    dataset = trained_on(cap)
    if dataset == "scenes":
        data = ("**synthetic scenes** (coloured shapes on plain backgrounds): it describes shapes, "
                "colours and layout, and is *not* a photo model")
    elif dataset:
        data = f"**{dataset}**"
    else:
        data = "**unknown** (no dataset recorded in metrics.json or the model card)"
    bleu = cap.metrics.get("bleu4")
    score = f" · test BLEU-4 {bleu:.3f}" if isinstance(bleu, (int, float)) else ""
    return (f"Weights: `{pretty_spec(slot.spec)}` · {cfg.attention} attention, {cfg.decoder.upper()} decoder, "
            f"`{cfg.encoder}` {cfg.grid[0]}×{cfg.grid[1]}{score}  \nTrained on {data}.")


# ----------------------------------------------------------------------------- captioning

@dataclass(frozen=True)
class DecodeOptions:
    mode: str = "beam"
    beam_size: int = 3
    temperature: float = 1.0
    max_len: int = 20
    length_penalty: float = 0.0
    no_repeat_ngram_size: int = DEFAULT_NO_REPEAT_NGRAM

    def checked(self) -> "DecodeOptions":
        """Coerce UI/API values (sliders send floats, clients anything) and reject nonsense (NaN,
        text, out of range) with a readable ValueError."""
        if self.mode not in MODES:
            raise ValueError(f"decoding must be one of {', '.join(MODES)}, got {self.mode!r}")
        beam = int(round(as_number(self.beam_size, "beam size")))
        max_len = int(round(as_number(self.max_len, "max length")))
        temp = as_number(self.temperature, "temperature")
        alpha = as_number(self.length_penalty, "length penalty")
        ngram = as_number(self.no_repeat_ngram_size, "no-repeat n-gram size")
        if not 1 <= beam <= 10:
            raise ValueError(f"beam size must be 1–10, got {self.beam_size}")
        if not 1 <= max_len <= MAX_LEN_LIMIT:
            raise ValueError(f"max length must be 1–{MAX_LEN_LIMIT}, got {self.max_len}")
        if not 0.0 < temp <= 10.0:
            raise ValueError(f"temperature must be in (0, 10], got {self.temperature}")
        if not 0.0 <= alpha <= MAX_LENGTH_PENALTY:
            raise ValueError(f"length penalty must be in [0, {MAX_LENGTH_PENALTY:g}], got {self.length_penalty}")
        if ngram != int(ngram) or not 0 <= ngram <= MAX_NO_REPEAT_NGRAM:
            raise ValueError(f"no-repeat n-gram size must be a whole number 0–{MAX_NO_REPEAT_NGRAM}, "
                             f"got {self.no_repeat_ngram_size}")
        return DecodeOptions(self.mode, beam, temp, max_len, alpha, int(ngram))


def as_number(value: Any, what: str) -> float:
    """A UI/API value as a finite float, or a ValueError saying what was wrong with it."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return x


@dataclass
class ModelOutput:
    caption: Caption
    resize: str
    image_size: int
    source: str
    crop_pct: float = 1.0
    hard: bool = False
    """Hard attention: at test time the decoder reads the one cell argmax α_t (the app outlines it)."""
    dataset: str = ""
    """What the weights were trained on (`trained_on`), for the out-of-distribution notice."""
    ood_error: str = ""
    """Why these weights have no out-of-distribution check ("" when they have one)."""


@dataclass
class StudioResult:
    """Both models' captions of one image, plus the display-size copy the overlays are drawn on."""

    display: Image.Image
    size: tuple[int, int]
    """(W, H) of the decoded (upright) photo."""
    outputs: dict[str, ModelOutput] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def n_tokens(self, name: str) -> int:
        out = self.outputs.get(name)
        return len(out.caption.tokens) if out else 0

    def to_json(self) -> dict[str, Any]:
        """The API's answer: per model words, tokens, probabilities, score, truncated (cut at max
        length), (T, h, w) attention, "ood" (true/false: unlike the training images; null and an
        "ood_error" when the weights have no statistics) and "encoder_top3" (ImageNet labels or null)."""
        models: dict[str, Any] = {}
        for name, out in self.outputs.items():
            models[name] = {**out.caption.to_dict(), "grid": list(out.caption.attention.shape[1:]),
                            "weights": out.source}
            if out.ood_error:
                models[name]["ood_error"] = out.ood_error
        for name, err in self.errors.items():
            models[name] = {"error": err}
        return {"image": {"width": self.size[0], "height": self.size[1]}, **models}


def display_copy(image: Image.Image, side: int = DISPLAY_SIDE, min_side: int = DISPLAY_MIN_SIDE
                 ) -> Image.Image:
    """The photo scaled so its long side is in [min_side, side] (aspect ratio kept)."""
    w, h = image.size
    if max(w, h) > side:
        img = image.copy()
        img.thumbnail((side, side), Image.BICUBIC, reducing_gap=2.0)
        return img
    if max(w, h) < min_side:
        scale = min_side / max(w, h)
        return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    return image.copy()


def caption_upload(slots: list[ModelSlot], source: str | Path | bytes | Image.Image,
                   options: DecodeOptions) -> StudioResult:
    """Decode the upload once and caption it with every loaded model.

    Raises `ImageError` (unreadable input) or ValueError (bad options) with a message for people. A
    model that fails on this image (e.g. `SearchError`: no finite probability) gets its message in
    `result.errors`; the other models' captions are kept.
    """
    opts = options.checked()
    image = load_image(source)
    result = StudioResult(display=display_copy(image), size=image.size)
    decoded: dict[str, Image.Image] = {}  # NOTE: one model-input decode per preprocessing, not per model
    for slot in slots:
        if not slot.ready:
            result.errors[slot.name] = slot.error or "not loaded"
            continue
        cap = slot.captioner
        assert cap is not None
        try:
            # NOTE: not the display image: the source decoded as `sat.image.model_input` decodes it for
            # this model's input size (the JPEG draft, as in training), the same input bit for bit
            key = json.dumps(cap.config.preprocessing, sort_keys=True)
            if key not in decoded:
                decoded[key] = load_image(source, decode_for=cap.config.preprocessing)
            with torch.inference_mode():
                out = cap.caption(decoded[key], mode=opts.mode, beam_size=opts.beam_size, max_len=opts.max_len,
                                  temperature=opts.temperature, length_penalty=opts.length_penalty,
                                  no_repeat_ngram_size=opts.no_repeat_ngram_size)
        except Exception as e:  # noqa: BLE001 — this column fails, the others keep their captions
            log.exception("captioning with the %s model failed", slot.name)
            result.errors[slot.name] = f"captioning failed: {type(e).__name__}: {e}"
            continue
        result.outputs[slot.name] = ModelOutput(out, cap.config.resize, cap.config.image_size, slot.spec,
                                                cap.config.crop_pct, hard=cap.config.attention == "hard",
                                                dataset=trained_on(cap), ood_error=cap.ood_error)
    return result


def safe_caption(slots: list[ModelSlot], source: Any, options: DecodeOptions
                 ) -> tuple[StudioResult | None, str]:
    """`caption_upload` that never raises: (result, "") or (None, a message for the person)."""
    if source is None or source == "":
        return None, "Upload an image (or pick an example) to caption it."
    name = Path(str(source)).name if isinstance(source, (str, Path)) else "the upload"
    try:
        return caption_upload(slots, source, options), ""
    except ImageError as e:
        return None, f"⚠️ **Can't read {name}:** {_strip_name(str(e), name)}"
    except ValueError as e:
        return None, f"⚠️ **Invalid setting:** {e}"
    except Exception as e:  # noqa: BLE001 — the app keeps serving; the log keeps the traceback
        log.exception("captioning %s failed", name)
        return None, f"⚠️ **Captioning failed:** {type(e).__name__}: {e}"


def _strip_name(message: str, name: str) -> str:
    """load_image's messages start with the file name; the UI names the file itself."""
    prefix = f"{name}: "
    return message[len(prefix):] if message.startswith(prefix) else message


# ----------------------------------------------------------------------------- drawing

def render_overlay(result: StudioResult, name: str, index: int, *, opacity: float = 0.6,
                   smooth: float = DEFAULT_SMOOTH, style: str = "spotlight", plain: bool = False
                   ) -> Image.Image:
    """The display image under the attention of token ``index`` (clamped) of model ``name``.

    ``style``: `sat.viz.overlay`'s "spotlight" or "heatmap"; ``plain``: the photo alone. The square
    the model saw is outlined (dashed) when it is not the whole photo, and a hard-attention model's
    cell for this token (argmax α_t, the one it read) gets a solid outline.
    """
    if plain:
        return result.display.copy()
    out = result.outputs[name]
    att = out.caption.attention
    i = min(max(int(index), 0), att.shape[0] - 1)
    return attention_panel(result.display, att[i], resize=out.resize, image_size=out.image_size,
                           crop_pct=out.crop_pct, smooth=max(float(smooth), 0.0),
                           opacity=min(max(float(opacity), 0.0), 1.0), style=style, hard=out.hard)


def write_grid(result: StudioResult, name: str, folder: str | Path, *, opacity: float = 0.6,
               smooth: float = DEFAULT_SMOOTH, style: str = "heatmap") -> Path:
    """The PNG grid of every token's attention for model ``name``, written under ``folder``."""
    out = result.outputs[name]
    words = "_".join(re.sub(r"[^a-z0-9]+", "", w.lower()) for w in out.caption.words[:6]) or "caption"
    path = Path(folder) / f"attention_{name}_{words}.png"
    return save_attention_grid(result.display, out.caption.tokens, out.caption.attention, path,
                               probs=out.caption.token_probs, resize=out.resize,
                               image_size=out.image_size, smooth=max(float(smooth), 0.0), crop_pct=out.crop_pct,
                               opacity=min(max(float(opacity), 0.0), 1.0), style=style, hard=out.hard)
