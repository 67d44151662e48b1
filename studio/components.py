"""The app's input components and the errors its API answers with.

Bad input through the API (`/caption`, `/steer`) is one line in the server's log and one clear
message for the client. NOTE: Gradio's queue prints the full traceback (≈ 30 lines) of every
`gr.Error` unless it was raised with ``print_exception=False`` (gradio/queueing.py); that holds for
the errors of its own input checks too (a slider's range, a radio's choices), so the inputs the API
shares with the page are subclasses whose check errors are re-raised that way (`one_line_errors`).

- `PhotoInput`: the image component, handing the handler the uploaded file itself;
- `Slider`, `Radio`, `Number`: Gradio's, their input checks' errors one line each;
- `api_error(endpoint, message)`: log one line, return the `gr.Error` to raise.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import gradio as gr

from .inference import log


def api_error(where: str, message: str) -> gr.Error:
    """``message`` as the client's error, logged as one line "WHERE: MESSAGE" (no traceback)."""
    log.warning("%s: %s", where, message)
    return gr.Error(message, print_exception=False)


@contextlib.contextmanager
def one_line_errors(where: str) -> Iterator[None]:
    """Re-raise a `gr.Error` from inside as `api_error` (one log line instead of a traceback)."""
    try:
        yield
    except gr.Error as e:
        if not e.print_exception:
            raise
        raise api_error(where, str(e.message)) from None


def _where(component: gr.components.Component) -> str:
    return f"input {component.label or component.elem_id or type(component).__name__.lower()!r}"


class PhotoInput(gr.Image):
    """`gr.Image` (preview, upload, clipboard paste, webcam) that hands the handler the uploaded file
    itself. NOTE: `gr.Image(type="filepath")` opens every upload with PIL first (a non-image is a
    Gradio error, not our message) and re-encodes it when its mode differs from ``image_mode``;
    here only pasted/webcam data URLs take Gradio's path, and `sat.image.load_image` decodes the
    rest (16-bit, CMYK, EXIF rotation, …) exactly as training does."""

    is_template = True  # NOTE: the front end is Image's own (get_block_name → "image")

    def preprocess(self, payload):  # type: ignore[override]
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        with one_line_errors(_where(self)):
            return super().preprocess(payload)


class Slider(gr.Slider):
    """`gr.Slider` whose range check ("Value 7 is greater than maximum value 5.") logs one line."""

    is_template = True  # NOTE: the front end (and the API's type) is Slider's own

    def preprocess(self, payload):  # type: ignore[override]
        with one_line_errors(_where(self)):
            return super().preprocess(payload)


class Radio(gr.Radio):
    """`gr.Radio` whose choices check logs one line."""

    is_template = True

    def preprocess(self, payload):  # type: ignore[override]
        with one_line_errors(_where(self)):
            return super().preprocess(payload)


class Number(gr.Number):
    """`gr.Number` whose checks log one line."""

    is_template = True

    def preprocess(self, payload):  # type: ignore[override]
        with one_line_errors(_where(self)):
            return super().preprocess(payload)


__all__ = ["Number", "PhotoInput", "Radio", "Slider", "api_error", "one_line_errors"]
