"""The variants `python -m train` and `compare` train, and warm starts from another model's weights.

`VARIANTS` says how each variant's model config differs from the base one; `WARM_STARTS` which
variants start from another variant's trained weights (hard attention from soft) and on what
schedule. `warm_start` is the general mechanism behind `--init-from FOLDER|hf://owner/repo`.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from sat.model import CaptionModel
from sat.paths import REPO
from sat.vocab import Vocab
from sat.weights import WeightsError, load_into, read_weights
from train import distributed as D
from train.loop import TrainConfig


# Every variant of `python -m train compare`, as changes to the base model config; the default run
# trains its "soft" and "hard" rows and the blind baseline from the same entries.
# NOTE: the base config starts the LSTM from a learned constant (init_state 'zeros', train/__main__.py);
# the rows measured with the paper's start from the mean annotation vector say so ('mean').
VARIANTS: dict[str, dict] = {
    "soft": {"attention": "soft", "decoder": "lstm"},
    "soft-mean": {"attention": "soft", "decoder": "lstm", "init_state": "mean"},
    # NOTE: half of hard attention's batches see one sampled cell: noisy enough without dropout 0.5;
    # at 0.25 it fits better (scenes, 6 epochs: val BLEU-4 0.429 vs 0.422, test 0.406 vs 0.404).
    # NOTE: hard attention keeps the mean start: from a constant h₀ its test-time argmax looks at the
    # same cell of every image first (from the constant-start soft model, 4 epochs: test BLEU-4 0.446,
    # CIDEr 3.40, steer_success 0.76, vs 0.505 / 4.28 / 0.92 from the mean-start one); and it warm-starts
    # from the mean-start soft model ('mean' on top of constant-start soft weights: 0.496 / 4.20 / 0.65).
    "hard": {"attention": "hard", "decoder": "lstm", "dropout": 0.25, "init_state": "mean"},
    "dot": {"attention": "dot", "decoder": "lstm", "init_state": "mean"},
    "uniform": {"attention": "uniform", "decoder": "lstm", "init_state": "mean"},
    "gru": {"attention": "soft", "decoder": "gru"},
    # NOTE: the Transformer gets the usual Transformer dropout; 0.5 (the LSTM's) starves it.
    "transformer": {"attention": "soft", "decoder": "transformer", "dropout": 0.1},
    "blind": {"attention": "soft", "decoder": "lstm", "blind": True},
    # self-critical sequence training (train/scst.py) from the cross-entropy rows' weights
    "soft+scst": {"attention": "soft", "decoder": "lstm"},
    "hard+scst": {"attention": "hard", "decoder": "lstm", "dropout": 0.25, "init_state": "mean"},
}
SCST_VARIANTS = {"soft+scst": "soft + SCST", "hard+scst": "hard + SCST"}
"""Variants trained by SCST (`TrainConfig.scst`), and their names in the results table."""

# Variants trained from another variant's weights: name → (source, share of the epochs, share of the lr).
# NOTE: from scratch, hard attention's argmax location sticks to the first object for the whole caption
# (scenes test BLEU-4 0.434–0.441 after 10–12 epochs). Started from the trained soft model, whose α
# already finds the objects, 4 epochs of hard training gave 0.522 at lr 4e-4 and 0.505 at lr 1e-3 (one
# thread each); the shipped run (lr 4e-4, two threads) 0.505. The hard model then costs the soft model's
# epochs plus its own: compare reports both.
# NOTE: SCST runs 2 epochs (of images, 5 samples each) at a fifth of the lr from its source's weights.
WARM_STARTS: dict[str, tuple[str, float, float]] = {"hard": ("soft-mean", 0.4, 0.4), "soft+scst": ("soft", 0.2, 0.2),
                                                    "hard+scst": ("hard", 0.2, 0.2)}


def warm_schedule(name: str, tc: TrainConfig) -> tuple[int, float]:
    """(epochs, lr) of a warm-started variant, from the base settings."""
    _, epochs, lr = WARM_STARTS[name]
    return max(1, round(tc.epochs * epochs)), tc.lr * lr


def variant_train_config(name: str, tc: TrainConfig, *, source: Path | None = None) -> TrainConfig:
    """The training settings of one variant: the base ones, or a warm start from `source`'s weights."""
    if name not in WARM_STARTS:
        return tc
    if source is None:
        raise ValueError(f"the {name!r} variant starts from the {WARM_STARTS[name][0]!r} weights: give their folder")
    epochs, lr = warm_schedule(name, tc)
    return TrainConfig(**{**asdict(tc), "init_from": repo_relative(source), "epochs": epochs, "lr": lr,
                          "scst": name in SCST_VARIANTS})


def resolve_init(path: str) -> Path:
    """An --init-from spec: a Hub spec (hf://owner/repo[@revision], see sat/hub.py), a folder as given,
    else relative to the repository (how the default run records it)."""
    from sat.hub import is_hub_spec, resolve_weights
    if is_hub_spec(path):
        return resolve_weights(path)
    p = Path(path)
    return p if p.is_absolute() or p.exists() or not (REPO / p).exists() else REPO / p


def repo_relative(path: Path) -> str:
    """A path as train_config.json records it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path.resolve())


ARCH_FIELDS = ("attention", "decoder", "init_state", "gate", "dropout", "blind")
"""Model settings a warm start reports when they differ from the source folder's config."""


def warm_start(model: CaptionModel, folder: Path, vocab: Vocab) -> None:
    """Load a weights folder's tensors into a freshly built model (see TrainConfig.init_from)."""
    tensors, saved_cfg, saved_vocab, _ = read_weights(folder)
    if saved_vocab.itos != vocab.itos:
        raise WeightsError(f"--init-from {folder}: its vocabulary ({len(saved_vocab)} tokens) differs from "
                           f"this dataset's ({len(vocab)} tokens); a warm start needs the same vocabulary")
    kept = load_into(model, tensors, source=f"--init-from {folder}", partial=True)
    if D.current().is_main:
        print(f"initialised from {folder}" + (f" (kept at their initial value: {', '.join(kept)})" if kept else ""))
        # NOTE: flags are not read from the source folder: say when the model differs from it (e.g. SCST
        # of the hard weights without --attention hard --init-state mean would train another model)
        diff = [f"{k} {getattr(saved_cfg, k)!r} → {getattr(model.config, k)!r}" for k in ARCH_FIELDS
                if getattr(saved_cfg, k) != getattr(model.config, k)]
        if diff:
            print(f"note: this model differs from {folder}'s: {', '.join(diff)}")
