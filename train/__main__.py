"""`python -m train [fit|evaluate|compare|score|scenes] ...` — with no subcommand: the default run.

The default run generates (or reuses) the scenes dataset, extracts features, trains the soft-attention
LSTM (constant start state), a soft one with the paper's mean start state (kept in runs/soft-mean), the
hard-attention LSTM starting from that one (`--init-from`), and the blind baseline, evaluates them on the
test split with beam 3 and writes `assets/weights/soft/` and `assets/weights/hard/` (float16 safetensors + JSON + model card).

`torchrun --nproc_per_node=N -m train fit ...` trains data-parallel (train/distributed.py);
`--batch-size` is then the global batch, split across the N processes.

`fit --scst --init-from DIR` fine-tunes a trained model by self-critical sequence training on CIDEr-D
(train/scst.py; --scst-samples, --scst-baseline mean|greedy, --scst-reward cider|bleu4, --scst-entropy).

`ood-stats --weights DIR` adds out-of-distribution statistics (sat/ood.py) to an existing weights folder
from the data it was trained on (fit writes them itself).

`fit --config FILE` / `--preset NAME` read settings from a file / a preset (flags override both; see
train/config_file.py and train/presets.py); every fit writes its resolved settings as run_config.yaml.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import fields
from pathlib import Path

from sat.__main__ import _float_in, _int_in
from sat.config import ModelConfig
from sat.paths import REPO, WEIGHTS
from sat.search import MAX_LENGTH_PENALTY, MAX_NGRAM
from train import config_file
from train.config_file import DERIVED, parse_bool
from train.loop import TrainConfig
from train.pipeline import DataConfig, run_default, run_evaluate, run_extract, run_fit
from train.presets import PAPER_SCORES, PRESETS

# NOTE: the shipped model's settings; `fit` exposes each as a flag.
# NOTE: measured on the scenes (4 epochs each, test split, beam 3): the 7×7×1280 head map gave
# BLEU-4 0.51 but pointing 0.17–0.36 (every cell sees the whole image, so attention need not look);
# the 14×14×112 stride-16 map gave BLEU-4 0.53 and pointing 0.85. The doubly stochastic penalty
# (alpha_c, averaged over L) is off by default: at λ = 1 it gave BLEU-4 0.526 vs 0.522, CIDEr 4.32 vs 4.48,
# attention mass 0.37 vs 0.43 (README "Train").
# NOTE: h₀/c₀ from a learned constant ('zeros'), not from the mean annotation vector (§3.1.2): measured on
# the scenes (10 epochs, seed 0, test split, beam 3) the mean-initialised model scored BLEU-4 0.563 / CIDEr
# 4.82, the constant start 0.630 / 5.36, and a mean start plus one attention step before the first
# word (tried, not kept) 0.610 / 5.19. From the mean vector the first word could not tell two
# same-looking objects ("two purple circles", 150 of 1,000 test scenes: CIDEr 0.78 there) from one;
# with the constant start the first attention step has to look, and those scenes reach CIDEr 3.85
# (bench/scst_runs.md). Hard attention keeps the mean start (VARIANTS in train/variants.py says why).
DEFAULT_MODEL = ModelConfig(feature_map="stride16", image_size=0, embed_dim=256, attention_dim=128, decoder_dim=256,
                            dropout=0.5, init_state="zeros")
# NOTE: 10 epochs since training skips padding (≈ 30–38 s per epoch on 2 cores, was ≈ 48 s): the soft
# model's validation BLEU-4 still rises at epochs 8–9. The hard model trains 4 more epochs from a
# mean-start soft one (WARM_STARTS in train/variants.py); from scratch it reached test BLEU-4 0.404 at 6, 0.438 at 10.
DEFAULT_TRAIN = TrainConfig()  # NOTE: one source of defaults: `fit()` from Python trains what the CLI trains
BLIND_EPOCHS = 2


def _add_dataclass_flags(p: argparse.ArgumentParser, cls, defaults, skip: set[str] = frozenset()) -> None:
    """One --flag per field of a config dataclass, typed from the default value."""
    for f in fields(cls):
        if f.name in skip:
            continue
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            # NOTE: `--bf16` alone means true; `--gate false` works; `--gate flase` is an error
            p.add_argument(flag, type=parse_bool, default=default, nargs="?",
                           const=True, metavar="BOOL", help=f"(default {default})")
        elif isinstance(default, (int, float, str)):
            p.add_argument(flag, type=type(default), default=default, help=f"(default {default})")


def _pick(cls, ns: argparse.Namespace, skip: set[str] = frozenset()):
    return cls(**{f.name: getattr(ns, f.name) for f in fields(cls) if f.name not in skip and hasattr(ns, f.name)})


def _fit_settings(parser: argparse.ArgumentParser, fit_p: argparse.ArgumentParser, argv: list[str],
                  args: argparse.Namespace) -> argparse.Namespace:
    """`fit`'s settings: built-in defaults < preset < --config file < explicit flags.

    NOTE: argparse fills a flag from its default only when the flag is absent, so the preset and the
    file become the defaults and the command line is parsed again: explicit flags win."""
    defaults, preset = config_file.fit_defaults(args.preset, args.config)
    if defaults:
        fit_p.set_defaults(**defaults)
        args = parser.parse_args(argv)
    if args.out is None:
        fit_p.error("--out is required (or `out` in the --config file's run section)")
    if args.tensorboard is not None:
        from train.tblog import require_tensorboard
        require_tensorboard()
    if preset:
        paper = ", ".join(f"{k.upper().replace('BLEU', 'BLEU-')} {v}" for k, v in PAPER_SCORES[preset].items())
        print(f"preset {preset}: the paper's soft attention reached {paper} on its test split", file=sys.stderr)
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd")

    fit_p = sub.add_parser("fit", help="train a model and write its weights folder")
    fit_p.add_argument("--config", type=Path, default=None, metavar="FILE",
                       help="settings file (.json, .toml, .yaml): sections model/train/data/run with the "
                            "flags' fields; flags override it (train/config_file.py)")
    fit_p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                       help="photo settings for a GPU (train/presets.py); a --config file and flags override it")
    fit_p.add_argument("--print-config", action="store_true", help="print the resolved settings and exit")
    fit_p.add_argument("--extract-only", action="store_true",
                       help="load the data and extract its features into the cache, then stop (the fit that "
                            "follows with the same settings reuses them)")
    fit_p.add_argument("--out", type=Path, default=None, help="weights folder to write (required)")
    fit_p.add_argument("--run-dir", type=Path, default=None, help="checkpoints/logs (default runs/<out name>)")
    fit_p.add_argument("--beam-size", type=int, default=3, help="beam size of the final test evaluation")
    fit_p.add_argument("--with-blind", type=parse_bool, nargs="?", const=True, default=False, metavar="BOOL",
                       help="also train+evaluate the blind baseline")
    fit_p.add_argument("--tensorboard", type=Path, default=None, metavar="DIR",
                       help="also write TensorBoard event files here: loss, xent, val BLEU-4, lr and "
                            "attention grids of 4 validation images per epoch")
    fit_p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    fit_p.add_argument("--push-to-hub", metavar="OWNER/REPO", default=None,
                       help="then upload the weights folder to this Hub model repo (token: HF_TOKEN "
                            "or `hf auth login`); see sat/hub.py")
    fit_p.add_argument("--hub-revision", default=None, help="branch to push to (default main)")
    fit_p.add_argument("--hub-private", action="store_true", help="create the Hub repo as private")
    _add_dataclass_flags(fit_p, ModelConfig, DEFAULT_MODEL, skip=DERIVED)
    _add_dataclass_flags(fit_p, TrainConfig, DEFAULT_TRAIN)

    ev = sub.add_parser("evaluate", help="score a weights folder on a split (official COCO metrics)")
    ev.add_argument("--weights", required=True, help="weights folder or hf://owner/repo[@revision]")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--beam-size", type=int, default=3)
    ev.add_argument("--length-penalty", type=_float_in(0.0, MAX_LENGTH_PENALTY), default=0.0, metavar="A",
                    help="beam ranking by log p / ((5 + length) / 6)^A; 0 = off (default)")
    ev.add_argument("--no-repeat-ngram-size", type=_int_in(0, MAX_NGRAM), default=0, metavar="N",
                    help="never repeat an N-word sequence within a caption; 0 = off (default)")
    ev.add_argument("--json", type=Path, default=None, help="write the metrics here")

    cmp_p = sub.add_parser("compare", help="train/evaluate every variant; write assets/results.{md,json}")
    cmp_p.add_argument("--beam-size", type=int, default=3)
    cmp_p.add_argument("--only", nargs="+", default=None, help="a subset of the variants")
    cmp_p.add_argument("--out-dir", type=Path, default=None, help="where results.md/json go (default assets/)")
    _add_dataclass_flags(cmp_p, ModelConfig, DEFAULT_MODEL, skip=DERIVED | {"attention", "decoder", "blind"})
    _add_dataclass_flags(cmp_p, TrainConfig, DEFAULT_TRAIN, skip={"init_from"})

    score_p = sub.add_parser("score", help="score any system's captions (COCO results JSON) with the official "
                                           "metrics against a dataset split's references")
    score_p.add_argument("--dataset", required=True, help="scenes, karpathy, flickr8k, flickr30k, coco or csv")
    score_p.add_argument("--data-root", default="", help="the dataset's folder")
    score_p.add_argument("--annotations", default="", help="annotation/split file, as for fit")
    score_p.add_argument("--split", default="test", choices=["train", "val", "test"])
    score_p.add_argument("--captions", type=Path, required=True, metavar="RESULTS.json",
                         help='[{"image_id": ..., "caption": "..."}, ...] ("file_name" may replace image_id)')
    score_p.add_argument("--data-seed", type=int, default=0, help="seed of datasets split by seed")
    score_p.add_argument("--json", type=Path, default=None, help="write the metrics here")

    sc = sub.add_parser("scenes", help="only generate the scenes dataset")
    ood_p = sub.add_parser("ood-stats", help="add out-of-distribution statistics (sat/ood.py) to an existing "
                                             "weights folder, from the data it was trained on")
    ood_p.add_argument("--weights", required=True, type=Path, help="the weights folder (a local path)")
    for p in (fit_p, ev, cmp_p, sc, ood_p):
        _add_dataclass_flags(p, DataConfig, DataConfig())
        p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")

    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.cmd == "fit":
        try:
            args = _fit_settings(parser, fit_p, argv, args)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    command = " ".join(["python -m train", *(shlex.quote(a) for a in argv)])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.cmd != "fit":
        print("error: under torchrun only `fit` runs (data parallel); run the others as one process",
              file=sys.stderr)
        return 2
    try:
        if args.cmd is None:
            run_default(DEFAULT_MODEL, DEFAULT_TRAIN, DataConfig(), weights_root=WEIGHTS,
                        runs=REPO / "runs", blind_epochs=BLIND_EPOCHS, beam_size=3, command=command)
        elif args.cmd == "fit":
            if args.push_to_hub:
                from sat.hub import check_repo_id
                check_repo_id(args.push_to_hub)  # NOTE: a typo fails now, not after the training
            cfgs = _pick(ModelConfig, args, DERIVED), _pick(TrainConfig, args), _pick(DataConfig, args)
            settings = config_file.resolved(args)
            if args.print_config:  # NOTE: after the configs are built: an invalid combination is an error here too
                print(config_file.dump(settings, command=command), end="")
                return 0
            if args.extract_only:
                run_extract(cfgs[0], cfgs[2], device=args.device, progress=not args.no_progress)
                return 0
            if int(os.environ.get("RANK", "0")) == 0:  # NOTE: the run folder's copy is written first: kept if it fails
                config_file.write_resolved(args.run_dir or REPO / "runs" / args.out.name, settings, command=command)
            run_fit(*cfgs, out=args.out, run_dir=args.run_dir, beam_size=args.beam_size, with_blind=args.with_blind,
                    resume=args.resume, device=args.device, progress=not args.no_progress, command=command,
                    tensorboard=args.tensorboard)
            if int(os.environ.get("RANK", "0")) == 0:
                config_file.write_resolved(args.out, settings, command=command)
            if args.push_to_hub:
                from sat.hub import push_to_hub
                url = push_to_hub(args.out, args.push_to_hub, revision=args.hub_revision,
                                  private=args.hub_private)
                print(f"pushed {args.out} to {args.push_to_hub}: {url}")
        elif args.cmd == "evaluate":
            run_evaluate(args.weights, _pick(DataConfig, args), split=args.split, beam_size=args.beam_size,
                         json_out=args.json, device=args.device, progress=not args.no_progress,
                         length_penalty=args.length_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size)
        elif args.cmd == "compare":
            from train.compare import run_compare
            run_compare(_pick(ModelConfig, args, DERIVED), _pick(TrainConfig, args), _pick(DataConfig, args), beam_size=args.beam_size,
                        only=args.only, out_dir=args.out_dir, device=args.device, progress=not args.no_progress,
                        command=command)
        elif args.cmd == "score":
            from train.score import run_score
            run_score(dataset=args.dataset, data_root=args.data_root or None, captions=args.captions,
                      split=args.split, annotations=args.annotations or None, seed=args.data_seed,
                      json_out=args.json)
        elif args.cmd == "ood-stats":
            from train.ood_stats import run_ood_stats
            run_ood_stats(args.weights, _pick(DataConfig, args), device=args.device, progress=not args.no_progress)
        elif args.cmd == "scenes":
            from train.pipeline import load_records
            records, root = load_records(_pick(DataConfig, args), progress=not args.no_progress)
            print(f"{len(records)} images in {root}")
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
