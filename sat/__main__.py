"""`python -m sat IMAGE [IMAGE ...] --weights DIR [--beam-size 3] [--json] [--attention-png OUT.png]`
— caption images.

Prints one caption per image (or one JSON object per line with --json). An unreadable image gets
a one-line error naming the file on stderr, the others are still captioned, and the exit code is 1.
--attention-png writes the per-word attention grid (sat/viz.py): to OUT.png for one image, and to
OUT_1.png, OUT_2.png, ... (numbered by the images' positions on the command line) for several.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "assets" / "weights" / "soft"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sat", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="weights folder")
    p.add_argument("--mode", choices=["beam", "greedy", "sample"], default="beam")
    p.add_argument("--beam-size", type=int, default=3)
    p.add_argument("--max-len", type=int, default=None)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None, help="seed for --mode sample")
    p.add_argument("--json", action="store_true", help="one JSON object per image (with attention maps)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when present)")
    p.add_argument("--attention-png", type=Path, default=None, metavar="OUT.png",
                   help="write the attention grid (OUT_1.png, OUT_2.png, ... for several images)")
    args = p.parse_args(argv)

    from sat.captioner import Captioner
    from sat.encoder import ImageError, load_image
    from sat.weights import WeightsError

    try:
        cap = Captioner.load(args.weights, device=args.device)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = 0
    for index, path in enumerate(args.images, start=1):
        try:
            image = load_image(path)
            out = cap.caption(image, mode=args.mode, beam_size=args.beam_size, max_len=args.max_len,
                              temperature=args.temperature, seed=args.seed)
        except ImageError as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"image": str(path), **out.to_dict()}))
        else:
            print(f"{path}\t{out.text}")
        if args.attention_png is not None:
            from sat.viz import save_attention_grid

            dest = args.attention_png
            if len(args.images) > 1:
                dest = dest.with_name(f"{dest.stem}_{index}{dest.suffix or '.png'}")
            save_attention_grid(image, out.tokens, out.attention, dest, probs=out.token_probs,
                                resize=cap.config.resize, image_size=cap.config.image_size)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
