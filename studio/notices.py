"""Per-column notes above the caption: is this image like the model's training images (`sat.ood`),
and what the encoder's own ImageNet classifier sees (`sat.labels`).

    notices_html(result, "soft")
    # ⚠️ This image is unlike the synthetic scenes this model was trained on: the caption is unreliable.
    # The encoder sees: military uniform 48 %, bow tie 13 %, suit 10 %
"""
from __future__ import annotations

import html

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
