"""`python -m train compare`: every attention kind and decoder, same data, budget and seed, one table.

Rows: soft, hard, dot, uniform (all LSTM), gru (soft attention), transformer, blind (soft LSTM with
the image replaced by zeros), soft + SCST and hard + SCST (self-critical fine-tuning of the soft and
hard rows, train/scst.py), word_frequency (no model: the most frequent word at each position) and
ceiling (each image's last reference scored against the others).
Each trained variant keeps its weights folder under `runs/compare/<name>/weights`; a rerun reuses
a folder whose config and training settings match, so the table can be rebuilt without training.
Writes `assets/results.json` (a list of rows: name, the evaluate JSON's keys, params, train_seconds)
and `assets/results.md`.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import torch

from sat.atomic import write_json
from sat.config import ModelConfig
from sat.device import resolve_device
from sat.model import CaptionModel
from sat.paths import REPO
from sat.weights import load_into, read_weights
from train.evaluate import write_metrics
from train.batches import split_rows
from train.loop import TrainConfig
from train.metrics import METRIC_KEYS, CaptionScorer
from train.steering import STEER_CHANCE
from train.pipeline import (TRAIN_CONFIG_FILE, DataConfig, Prepared, Trained, complete_config,
                            fit_and_evaluate, prepare, ship)
from train.variants import SCST_VARIANTS, VARIANTS, WARM_STARTS, variant_train_config, warm_schedule

COLUMNS = METRIC_KEYS


def word_frequency_caption(captions: list[list[str]]) -> list[str]:
    """The unigram-per-position baseline: the median length, and at each position the most
    frequent training word at that position (ties broken alphabetically)."""
    if not captions:
        raise ValueError("no training captions")
    lengths = sorted(len(c) for c in captions)
    n = lengths[len(lengths) // 2]
    out = []
    for i in range(n):
        counts = Counter(c[i] for c in captions if len(c) > i)
        out.append(min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0])
    return out


def word_frequency_row(prep: Prepared, scorer: CaptionScorer) -> dict:
    caption = " ".join(word_frequency_caption([list(c) for r in prep.records if r.split == "train" for c in r.captions]))
    rows = split_rows(prep.records, prep.cache, "test")
    by_id = {r.image_id: r for r in prep.records}
    refs = {prep.cache.ids[i]: list(by_id[prep.cache.ids[i]].raw) for i in rows}
    m = scorer.score(refs, {k: caption for k in refs})
    m.update({"n_images": len(refs), "beam_size": 0, "caption": caption, "params": 0, "train_seconds": 0.0})
    return m


def ceiling_split(refs: dict[str, list[str]]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The reference ceiling: each image's last reference (the 5th of 5) as the caption, scored
    against the others → (references, captions). Images with one reference are left out."""
    keep = {k: rs for k, rs in refs.items() if len(rs) >= 2}
    if not keep:
        raise ValueError("the reference ceiling needs images with at least 2 references")
    return {k: list(rs[:-1]) for k, rs in keep.items()}, {k: rs[-1] for k, rs in keep.items()}


def ceiling_row(prep: Prepared, scorer: CaptionScorer) -> dict:
    """How a human caption scores on the test split against the other references (fewer of them)."""
    rows = split_rows(prep.records, prep.cache, "test")
    by_id = {r.image_id: r for r in prep.records}
    refs, caps = ceiling_split({prep.cache.ids[i]: list(by_id[prep.cache.ids[i]].raw) for i in rows})
    m = scorer.score(refs, caps)
    m.update({"n_images": len(refs), "beam_size": 0, "params": 0, "train_seconds": 0.0})
    return m


def _settings(tc: dict) -> dict:
    """Training settings as reuse compares them.

    NOTE: a warm start matches on having one, not on the path it was recorded with (the source
    folder is the matching variant of the same settings either way); older folders lack newer
    TrainConfig fields, which then hold their defaults.
    """
    tc = {**asdict(TrainConfig()), **tc}
    return {**tc, "init_from": bool(tc["init_from"])}


def _reuse(folders: list[Path], cfg: ModelConfig, tc: TrainConfig) -> tuple[Trained, Path] | None:
    """The first finished weights folder whose config and training settings match (loaded, and
    where it is), else None.

    NOTE: the bundled assets/weights/{soft,hard} are candidates too: when the default run used the
    same model and training settings, the table shows those very weights instead of retraining.
    """
    for folder in folders:
        try:
            tensors, saved_cfg, _, metrics = read_weights(folder)
            saved_tc = json.loads((folder / TRAIN_CONFIG_FILE).read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue
        if saved_cfg == cfg and _settings(saved_tc) == _settings(asdict(tc)) and "bleu4" in metrics:
            break
    else:
        return None
    model = CaptionModel(cfg)
    load_into(model, tensors, source=str(folder))
    print(f"reusing {folder}")
    return Trained(model, tc, [], metrics.get("train_seconds", 0.0), metrics), folder


def run_compare(base: ModelConfig, tc: TrainConfig, dc: DataConfig, *, beam_size: int = 3,
                runs: Path | None = None, out_dir: Path | None = None, only: list[str] | None = None,
                device: str = "auto", progress: bool = True, command: str = "python -m train compare") -> list[dict]:
    runs = runs or REPO / "runs" / "compare"
    out_dir = out_dir or REPO / "assets"
    dev = resolve_device(device)
    prep = prepare(dc, base, device=dev, progress=progress)
    names = only or list(VARIANTS) + list(NO_MODEL)
    unknown = sorted(set(names) - set(VARIANTS) - set(NO_MODEL))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {', '.join([*VARIANTS, *NO_MODEL])}")
    results, done = [], {}
    with CaptionScorer() as scorer:
        for name in names:
            results.append(_row(name, prep, base, tc, runs=runs, beam_size=beam_size, device=dev,
                                progress=progress, command=command, scorer=scorer, done=done))
    write_results(results, out_dir, command=command, tc=tc, base=base)
    return results


def _trained(name: str, prep: Prepared, base: ModelConfig, tc: TrainConfig, *, runs: Path, beam_size: int,
             device: torch.device, progress: bool, command: str, scorer: CaptionScorer,
             done: dict[str, tuple[Trained, Path]]) -> tuple[Trained, Path]:
    """Train (or reuse) one variant → (its model and metrics, its weights folder); a warm-started
    variant first gets its source variant the same way."""
    if name in done:
        return done[name]
    source = None
    if name in WARM_STARTS:
        source = _trained(WARM_STARTS[name][0], prep, base, tc, runs=runs, beam_size=beam_size, device=device,
                          progress=progress, command=command, scorer=scorer, done=done)[1]
    cfg = complete_config(base.replace(**VARIANTS[name]), prep.vocab, prep.cache)
    vtc = variant_train_config(name, tc, source=source)
    folder = runs / name / "weights"
    entry = _reuse([folder, REPO / "assets" / "weights" / name], cfg, vtc)
    if entry is None:
        t = fit_and_evaluate(prep, cfg, vtc, run_dir=runs / name, beam_size=beam_size, device=device,
                             progress=progress, scorer=scorer)
        ship(folder, t, prep, command=command)
        entry = (t, folder)
    done[name] = entry
    return entry


def _row(name: str, prep: Prepared, base: ModelConfig, tc: TrainConfig, *, done: dict, **kw) -> dict:
    """Train (or reuse) and evaluate one variant → its results row."""
    if name in NO_MODEL:
        row = NO_MODEL[name](prep, kw["scorer"])
    else:
        t, _ = _trained(name, prep, base, tc, done=done, **kw)
        row = {k: v for k, v in t.metrics.items() if k not in ("blind", "total_seconds")}
        if name in WARM_STARTS:  # NOTE: its budget includes the source's training
            src = WARM_STARTS[name][0]
            row["init_from"] = src
            row["own_train_seconds"] = row.get("train_seconds", 0.0)
            row["train_seconds"] = round(row["own_train_seconds"] + done[src][0].metrics.get("train_seconds", 0.0), 1)
    row = {"name": name, **row}
    print(f"[{name}]")
    write_metrics(row, None)
    return row


# rows without a model: a word-frequency baseline and the human ceiling
NO_MODEL = {"word_frequency": word_frequency_row, "ceiling": ceiling_row}


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _warm_note(results: list[dict], tc: TrainConfig) -> str:
    notes = []
    for r in results:
        if r.get("init_from"):
            epochs, lr = warm_schedule(r["name"], tc)
            notes.append(f" The {r['name']} row starts from the {r['init_from']} row's weights and trains "
                         f"{epochs} epochs max at lr {lr:g}; its train s adds both "
                         f"({r['own_train_seconds']:.0f} s its own).")
    return "".join(notes)


def _start_note(results: list[dict]) -> str:
    mean = [r["name"] for r in results if VARIANTS.get(r["name"], {}).get("init_state") == "mean"]
    if not mean:
        return ""
    return (f" LSTM start state h₀/c₀: from the mean annotation vector (§3.1.2) in the {', '.join(mean)} rows, "
            f"a learned constant in the other LSTM rows (the GRU starts from 0).")


def write_results(results: list[dict], out_dir: Path, *, command: str, tc: TrainConfig, base: ModelConfig) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "results.json", results, indent=2)
    head = ["variant", *COLUMNS, "pointing", "chance", "steer", "params", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        g = r.get("grounding", {})
        name = SCST_VARIANTS.get(r["name"], r["name"]) + (f" (from {r['init_from']})" if r.get("init_from") else "")
        cells = [name, *(_fmt(r[c]) for c in COLUMNS), _fmt(g.get("pointing", "–")),
                 _fmt(g.get("chance_pointing", "–")), _fmt(g.get("steer_success", "–")), f"{r.get('params', 0) / 1e6:.2f} M", f"{r.get('train_seconds', 0):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    beam = next((r["beam_size"] for r in results if r.get("beam_size")), "–")
    text = (f"Scenes test split, beam {beam}; every trained row: same data, seed {tc.seed}, "
            f"{tc.epochs} epochs max (early stopping on validation BLEU-4), batch {tc.batch_size}, "
            f"embed {base.embed_dim} / attention {base.attention_dim} / hidden {base.decoder_dim}. "
            f"Pointing: share of generated object words whose attention peak lies on the object "
            f"(chance: a uniform map). Steer: share of object words that become another object's shape when "
            f"the word's attention is forced onto that object's centre (chance {STEER_CHANCE:.3f}: a random shape word). The + SCST rows fine-tune by self-critical sequence training on CIDEr-D "
            f"(early stopping on validation CIDEr-D of greedy captions); the ceiling row scores each image's "
            f"last reference against the others.{_start_note(results)}{_warm_note(results, tc)}\n\n" + "\n".join(lines) + f"\n\nProduced by `{command}`.\n")
    (out_dir / "results.md").write_text(text, encoding="utf-8")
    print(text)
