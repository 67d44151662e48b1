"""Per-column notes about this image: above the caption, is it like the model's training images
(`sat.ood`) and what the encoder's own ImageNet classifier sees (`sat.labels`); under the overlay,
which part of a non-square photo the model sees (`crop_note`).

    notices_html(result, "soft")
    # ⚠️ This image is unlike the synthetic scenes this model was trained on: the caption is unreliable.
    # The encoder sees: military uniform 48 %, bow tie 13 %, suit 10 %
"""
from __future__ import annotations

import html

from sat.viz import square_box

from .inference import StudioResult

OOD_STYLE = "padding:6px 10px;margin-bottom:6px;border-left:4px solid #dc2626;background:rgba(220,38,38,.08)"
SEES_STYLE = "font-size:.9rem;opacity:.85;margin-bottom:4px"


def training_data(dataset: str) -> str:
    """How the notice names a model's training data: "the synthetic scenes", "the coco images"."""
    if dataset == "scenes":
        return "the synthetic scenes"
    return f"the {dataset} images" if dataset else "the images"


def ood_notice(result: StudioResult, name: str) -> str:
    """The flag's notice (HTML), a quiet note when these weights have no check, or ""."""
    out = result.outputs[name]
    ood = out.caption.ood
    if ood is None:
        if not out.ood_error:
            return ""
        return (f'<div class="sat-ood-off" style="{SEES_STYLE}" title="{html.escape(out.ood_error)}">'
                "No check of whether this image is like the training images (these weights have no "
                "statistics for it).</div>")
    if not ood.flagged:
        return ""
    tip = (f"distance {ood.distance:.1f} from the training images' features > threshold "
           f"{ood.threshold:.1f}, which ≤ 1 % of the model's own test images exceed")
    return (f'<div class="sat-ood" role="alert" style="{OOD_STYLE}" title="{html.escape(tip)}">'
            f"⚠️ This image is unlike {html.escape(training_data(out.dataset or ood.dataset))} this model "
            "was trained on: the caption is unreliable.</div>")


def sees_line(result: StudioResult, name: str) -> str:
    """"The encoder sees: tabby 61 %, …" from the backbone's ImageNet classifier, or ""."""
    top3 = result.outputs[name].caption.encoder_top3
    if not top3:
        return ""
    labels = ", ".join(f"{html.escape(label)} {p:.0%}" for label, p in top3)
    return (f'<div class="sat-sees" style="{SEES_STYLE}" title="the top 3 of the pretrained encoder\'s '
            f'ImageNet classifier on this image">The encoder sees: {labels}</div>')


def notices_html(result: StudioResult | None, name: str) -> str:
    """Both notes for model `name`'s column ("" before a caption or when the column failed)."""
    if result is None or name not in result.outputs:
        return ""
    return ood_notice(result, name) + sees_line(result, name)


def crop_note(result: StudioResult | None, name: str, *, plain: bool = False) -> str:
    """"The model sees only the centre square (dashed); the sides are cut off." when model ``name``
    sees only part of this photo (a centre crop of a non-square photo; ``plain``: no dashed box is
    drawn, so none is mentioned), else "" (a square photo, a padded model, no caption)."""
    if result is None or name not in result.outputs:
        return ""
    out = result.outputs[name]
    W, H = result.display.size
    # NOTE: the same test as the dashed box of `sat.viz.attention_panel`: the note and the box agree
    box = square_box((W, H), resize=out.resize, image_size=out.image_size, crop_pct=out.crop_pct)
    if box is None or box == (0, 0, W, H):
        return ""
    x0, y0, x1, y1 = box
    sides, ends = x0 > 0 or x1 < W, y0 > 0 or y1 < H
    cut = "the sides are" if sides and not ends else "the top and bottom are" if ends and not sides else "the edges are"
    return f"The model sees only the centre square{'' if plain else ' (dashed)'}; {cut} cut off."
