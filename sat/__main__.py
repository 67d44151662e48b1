"""`python -m sat IMAGE [IMAGE ...] --weights DIR [--beam-size 3] [--json] [--attention-png OUT.png]`
— caption images.

Prints one caption per image (or one JSON object per line with --json). An unreadable image gets
a one-line error naming the file on stderr, the others are still captioned, and the exit code is 1.
--attention-png writes the per-word attention grid (sat/viz.py): to OUT.png for one image, and to
OUT_1.png, OUT_2.png, ... (numbered by the images' positions on the command line) for several.
Options are checked before any model is loaded (exit 2): --beam-size 1–20, --max-len 1–100, a finite
--temperature > 0, --length-penalty 0–5, --no-repeat-ngram-size 0–100, a --device this machine has,
an --attention-png that is not a folder.
A caption cut at --max-len (the model would have gone on) is printed with "(cut at N words)";
with --json it has "truncated": true and no "<end>" token.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from sat.paths import WEIGHTS

DEFAULT_WEIGHTS = WEIGHTS / "soft"


def _in(kind: type, lo: float, hi: float):
    """argparse type: a finite `kind` (int or float) in [lo, hi]."""
    what = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} in [{lo:g}, {hi:g}], got {text!r}") from None
        if not (math.isfinite(value) and lo <= value <= hi):
            raise argparse.ArgumentTypeError(f"must be {'' if kind is int else 'a number '}in [{lo:g}, {hi:g}], "
                                             f"got {text}")
        return value
    return parse


def _int_in(lo: int, hi: int):
    return _in(int, lo, hi)


def _float_in(lo: float, hi: float):
    return _in(float, lo, hi)


def _positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (NaN and inf would reach torch.multinomial)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    from sat.config import INT_LIMITS
    from sat.search import MAX_BEAM_SIZE, MAX_LENGTH_PENALTY, MAX_NGRAM

    p = argparse.ArgumentParser(prog="python -m sat", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS),
                   help="weights folder or hf://owner/repo[@revision] (default: the bundled soft model)")
    p.add_argument("--mode", choices=["beam", "greedy", "sample"], default="beam")
    p.add_argument("--beam-size", type=_int_in(1, MAX_BEAM_SIZE), default=3, help=f"1–{MAX_BEAM_SIZE}")
    p.add_argument("--max-len", type=_int_in(*INT_LIMITS["max_len"]), default=None,
                   help="longest caption in words (default: the model's)")
    p.add_argument("--temperature", type=_positive_float, default=1.0, help="--mode sample: > 0")
    p.add_argument("--seed", type=int, default=None, help="seed for --mode sample")
    p.add_argument("--length-penalty", type=_float_in(0.0, MAX_LENGTH_PENALTY), default=0.0, metavar="A",
                   help="beam search ranks (and prunes) by log p / ((5 + length) / 6)^A; 0 = off (default)")
    p.add_argument("--no-repeat-ngram-size", type=_int_in(0, MAX_NGRAM), default=0, metavar="N",
                   help="never repeat an N-word sequence within a caption; 0 = off (default)")
    p.add_argument("--json", action="store_true", help="one JSON object per image (with attention maps)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when present)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decoder step (pays off over many images, on a GPU)")
    p.add_argument("--attention-png", type=Path, default=None, metavar="OUT.png",
                   help="write the attention grid (OUT_1.png, OUT_2.png, ... for several images)")
    args = p.parse_args(argv)

    from sat.captioner import Captioner
    from sat.device import resolve_device
    from sat.image import ImageError, load_image
    from sat.search import SearchError
    from sat.weights import WeightsError

    if args.attention_png is not None and args.attention_png.is_dir():
        p.error(f"--attention-png: {args.attention_png} is a folder; give a file name such as out.png")
    try:
        resolve_device(args.device)
    except ValueError as e:
        p.error(f"--device: {e}")

    try:
        cap = Captioner.load(args.weights, device=args.device, compile=args.compile)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = 0
    for index, path in enumerate(args.images, start=1):
        try:
            if path.is_dir():  # NOTE: load_image would say "no such file"
                raise ImageError(f"{path}: is a folder, not an image file")
            # NOTE: the path, so the model decodes it as feature extraction does (sat.image.model_input)
            out = cap.caption(path, mode=args.mode, beam_size=args.beam_size, max_len=args.max_len,
                              temperature=args.temperature, length_penalty=args.length_penalty,
                              no_repeat_ngram_size=args.no_repeat_ngram_size, seed=args.seed)
        except ImageError as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
            continue
        except SearchError as e:
            failed += 1
            print(f"error: {path}: {e}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"image": str(path), **out.to_dict()}))
        else:
            print(f"{path}\t{out.text}" + (f" (cut at {len(out.words)} words)" if out.truncated else ""))
        if args.attention_png is not None:
            from sat.viz import save_attention_grid

            dest = args.attention_png
            if len(args.images) > 1:
                dest = dest.with_name(f"{dest.stem}_{index}{dest.suffix or '.png'}")
            save_attention_grid(load_image(path), out.tokens, out.attention, dest, probs=out.token_probs,
                                resize=cap.config.resize, image_size=cap.config.image_size,
                                crop_pct=cap.config.crop_pct, hard=cap.config.attention == "hard")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
