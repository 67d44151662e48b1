"""Plain functions behind `python -m train`: data → feature cache → fit → evaluate → weights folder.

Each CLI subcommand maps to one function here (`run_fit`, `run_evaluate`, `run_default`).
`run_fit` also runs under `torchrun --nproc_per_node=N -m train fit ...`: every rank prepares
the data (rank 0 generates it first; feature extraction is sharded), every rank trains its share
of each global batch, and rank 0 alone evaluates and writes the weights folder.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import contextlib

import torch

from sat.config import ModelConfig
from sat.encoder import create_encoder
from sat.model import CaptionModel
from sat.vocab import Vocab
from sat.weights import save_weights
from train.data.karpathy import ImageRecord, load_karpathy
from train import distributed as D
from train.evaluate import bleu4_quick, generate_words, score_split, write_metrics
from train.features import FeatureCache, extract_features
from train.loop import CaptionData, TrainConfig, fit
from train.metrics import CaptionScorer
from train.variants import VARIANTS, WARM_STARTS, resolve_init, variant_train_config, warm_start

REPO = Path(__file__).resolve().parent.parent
METRIC_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "scenes"
    """Dataset name: 'scenes' (generated here) or 'karpathy' (a dataset_*.json + images)."""
    data_root: str = ""
    """Dataset folder ('' = data/scenes under the repository for scenes)."""
    annotations: str = ""
    """Karpathy JSON file (karpathy dataset only; '' = the single dataset_*.json in data_root)."""
    n_train: int = 8000
    """Scenes: training images."""
    n_val: int = 500
    """Scenes: validation images."""
    n_test: int = 1000
    """Scenes: test images."""
    scene_size: int = 224
    """Scenes: image side in pixels."""
    data_seed: int = 0
    """Scenes: generator seed."""
    cache_dir: str = ""
    """Feature cache folder ('' = cache/features under the repository)."""
    min_freq: int = 5
    """Vocabulary: minimum word count in the training captions."""
    val_images: int = 500
    """Validation images captioned (greedy) after every epoch for early stopping."""
    encoder_bf16: bool = False
    """Extract features under bfloat16 autocast (faster where the CPU has AMX/AVX512-BF16 or on
    CUDA; the maps drift slightly, see bench/results.md; a separate cache)."""


def device_from(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_records(dc: DataConfig, *, progress: bool = True) -> tuple[list[ImageRecord], Path]:
    """Records of every split, and the dataset root (generating the scenes when needed)."""
    if dc.dataset == "scenes":
        from train.data.scenes import generate_scenes
        root = Path(dc.data_root) if dc.data_root else REPO / "data" / "scenes"
        with D.main_first():  # NOTE: under torchrun rank 0 writes the images, the others reuse them
            json_path = generate_scenes(root, n_train=dc.n_train, n_val=dc.n_val, n_test=dc.n_test,
                                        image_size=dc.scene_size, seed=dc.data_seed,
                                        progress=progress and D.current().is_main)
        return load_karpathy(json_path, image_root=root), root
    from train.data import load_dataset
    if not dc.data_root:
        raise ValueError(f"--dataset {dc.dataset} needs --data-root (the dataset's folder)")
    loaded = load_dataset(dc.dataset, Path(dc.data_root), annotations=dc.annotations or None,
                          seed=dc.data_seed)
    return loaded.records, loaded.root


def features_for(records: list[ImageRecord], root: Path, cfg: ModelConfig, dc: DataConfig, *,
                 device: torch.device, progress: bool = True) -> FeatureCache:
    encoder = create_encoder(cfg.encoder, feature_map=cfg.feature_map, finetune_blocks=cfg.finetune_blocks)
    cache_dir = Path(dc.cache_dir) if dc.cache_dir else REPO / "cache" / "features"
    return extract_features([r.path for r in records], [r.image_id for r in records], encoder=encoder,
                            image_size=cfg.image_size, resize=cfg.resize, dataset_root=root,
                            cache_dir=cache_dir, device=device, progress=progress, bf16=dc.encoder_bf16)


def split_rows(records: list[ImageRecord], cache: FeatureCache, split: str) -> list[int]:
    """Cache rows of a split, without images that failed to decode."""
    index, valid = cache.index, cache.valid
    return [index[r.image_id] for r in records if r.split == split and valid[index[r.image_id]]]


def caption_data(records: list[ImageRecord], cache: FeatureCache, vocab: Vocab) -> CaptionData:
    """All (image, caption) pairs of the training split, captions encoded and padded."""
    rows, caps = [], []
    by_id = {r.image_id: r for r in records}
    train_rows = split_rows(records, cache, "train")
    for new_row, row in enumerate(train_rows):
        for tokens in by_id[cache.ids[row]].captions:
            rows.append(new_row)
            caps.append(vocab.encode(list(tokens)))
    width = max(len(c) for c in caps)
    padded = torch.full((len(caps), width), vocab.pad_id, dtype=torch.long)
    for i, c in enumerate(caps):
        padded[i, : len(c)] = torch.tensor(c)
    return CaptionData(maps=cache.tensor(train_rows), rows=torch.tensor(rows), captions=padded)


def build_model(cfg: ModelConfig, *, seed: int) -> CaptionModel:
    torch.manual_seed(seed)
    encoder = create_encoder(cfg.encoder, feature_map=cfg.feature_map, finetune_blocks=cfg.finetune_blocks)
    return CaptionModel(cfg, tail=encoder.tail)


def complete_config(cfg: ModelConfig, vocab: Vocab, cache: FeatureCache) -> ModelConfig:
    """Fill the fields fixed by the data: vocabulary size, D and the grid."""
    enc = create_encoder(cfg.encoder, feature_map=cfg.feature_map, pretrained=False,
                         finetune_blocks=cfg.finetune_blocks)
    grid = enc.grid(cfg.image_size)
    return cfg.replace(vocab_size=len(vocab), encoder_dim=enc.dim, grid=grid, max_len=vocab.max_len)


def train_one(cfg: ModelConfig, tc: TrainConfig, dc: DataConfig, *, records: list[ImageRecord],
              cache: FeatureCache, vocab: Vocab, run_dir: Path, device: torch.device, resume: bool,
              progress: bool) -> tuple[CaptionModel, list[dict], float]:
    """Fit one model; returns it (best epoch loaded), its history and the wall time in seconds."""
    data = caption_data(records, cache, vocab)
    val_rows = split_rows(records, cache, "val")[: dc.val_images]
    by_id = {r.image_id: r for r in records}
    val_refs = [by_id[cache.ids[i]].captions for i in val_rows]
    val_maps = cache.tensor(val_rows)

    def validate(m: CaptionModel) -> float:
        words = generate_words(m, vocab, val_maps, mode="greedy", device=device)
        return bleu4_quick(val_refs, words)

    model = build_model(cfg, seed=tc.seed)
    if tc.init_from:
        warm_start(model, resolve_init(tc.init_from), vocab)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ctx = D.current()
    if ctx.is_main and ctx.active:
        print(f"data parallel: {ctx.world} ranks ({D.backend_for(device.type)}), global batch {tc.batch_size}, "
              f"about {-(-tc.batch_size // ctx.world)} pairs per rank")
    if ctx.is_main:
        print(f"training {'blind ' if cfg.blind else ''}{cfg.attention}/{cfg.decoder}: {n_params / 1e6:.2f} M "
              f"trainable parameters, {len(data)} pairs, {len(val_rows)} val images, device {device}")
    t0 = time.time()
    history = fit(model, data=data, validate=validate, out_dir=run_dir, config=tc, pad_id=vocab.pad_id,
                  resume=resume, device=device, progress=progress)
    return model, history, time.time() - t0


def evaluate_on(model: CaptionModel, vocab: Vocab, records: list[ImageRecord], cache: FeatureCache, *,
                split: str, beam_size: int, device: torch.device, progress: bool = True,
                root: Path | None = None, scorer: CaptionScorer | None = None) -> dict:
    """Official metrics on a split; plus grounding when the records carry object masks (scenes)."""
    rows = split_rows(records, cache, split)
    if not rows:
        raise ValueError(f"the {split!r} split has no usable images")
    by_id = {r.image_id: r for r in records}
    recs = [by_id[cache.ids[i]] for i in rows]
    truth = None
    if root is not None and all("objects" in r.extra and "mask" in r.extra for r in recs):
        from train.grounding import load_scene_truth
        truth = [load_scene_truth(r.extra, root) for r in recs]
    metrics, _ = score_split(model, vocab, cache.tensor(rows), [list(r.raw) for r in recs], beam_size=beam_size,
                             device=device, progress=progress, ids=[r.image_id for r in recs], truth=truth,
                             scorer=scorer)
    metrics["split"] = split
    return metrics


def _attention_line(cfg: ModelConfig) -> str:
    if cfg.attention == "hard":
        return (f"- Attention: hard (stochastic, Xu et al. §4.1): trained with REINFORCE on sampled locations "
                f"(reward {'log p of the words from t on' if cfg.hard_reward == 'to_go' else 'log p(y) of the caption'}"
                f" (`hard_reward: {cfg.hard_reward}`), moving-average baseline per position, λ_r {cfg.hard_reinforce} "
                f"per token, entropy bonus λ_e {cfg.hard_entropy}, "
                f"half the batches on the expected context); at test time the context is the "
                f"**{cfg.hard_test_rule}** location rule (`hard_test_rule` in config.json: 'argmax' or "
                f"'expectation'). The map shown per word is α_t.\n")
    return f"- Attention: {cfg.attention}; the map shown per word is α_t.\n"


def _init_line(tc: TrainConfig) -> str:
    if not tc.init_from:
        return ""
    return f"- Initialised from the weights in `{tc.init_from}` (warm start), then trained as below.\n"


def _grounding_line(metrics: dict) -> str:
    g = metrics.get("grounding")
    if not g:
        return ""
    return (f"\nWhere it looks (object words of the generated test captions, `train/grounding.py`): pointing "
            f"{g['pointing']:.3f} (uniform chance {g['chance_pointing']:.3f}), mass {g['mass']:.3f} "
            f"(chance {g['chance_mass']:.3f}) over {g['n_words']} words.\n")


def model_card(*, cfg: ModelConfig, tc: TrainConfig, dc: DataConfig, metrics: dict, history: list[dict],
               seconds: float, command: str, counts: dict[str, int]) -> str:
    rows = [("this model", metrics)] + ([("blind baseline", metrics["blind"])] if "blind" in metrics else [])
    table = "| model | " + " | ".join(METRIC_KEYS) + " |\n|---|" + "---|" * len(METRIC_KEYS) + "\n"
    for name, m in rows:
        table += f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in METRIC_KEYS) + " |\n"
    synthetic = dc.dataset == "scenes"
    warning = ("**Trained on synthetic scenes** (coloured shapes on plain backgrounds, generated by "
               "`train/data/scenes.py`): it describes shapes, colours, sizes and their layout, and is "
               "*not* a model of real photos.\n\n") if synthetic else ""
    return f"""# SAT Studio weights: {cfg.attention} attention, {cfg.decoder.upper()} decoder

{warning}- Data: `{dc.dataset}` ({', '.join(f'{k} {v}' for k, v in counts.items())} images); vocabulary {cfg.vocab_size} tokens (min count {dc.min_freq}), captions ≤ {cfg.max_len} words.
- Encoder: `{cfg.encoder}` ({cfg.feature_map} feature map, {cfg.grid[0]}×{cfg.grid[1]}×{cfg.encoder_dim}, {cfg.image_size} px, {cfg.resize}), ImageNet weights, {"frozen" if not cfg.finetune_blocks else f"last {cfg.finetune_blocks} blocks fine-tuned"}.
- Decoder: {cfg.decoder.upper()}, embed {cfg.embed_dim}, attention {cfg.attention_dim}, hidden {cfg.decoder_dim}, dropout {cfg.dropout}, gate {cfg.gate}, h₀/c₀ from {cfg.init_state}.
{_attention_line(cfg)}{_init_line(tc)}- Training: {len(history)} epochs (best by validation BLEU-4 of greedy captions), batch {tc.batch_size}, Adam lr {tc.lr}, clip {tc.grad_clip}, λ(doubly stochastic) {tc.alpha_c}, seed {tc.seed}; {seconds / 60:.1f} min on {platform.machine()} ({torch.get_num_threads()} threads, torch {torch.__version__}).
- Test split, beam {metrics['beam_size']}, {metrics['n_images']} images (official COCO caption metrics, pycocoevalcap):

{table}{_grounding_line(metrics)}
Produced by: `{command}`
"""


def save_run(folder: Path, model: CaptionModel, vocab: Vocab, metrics: dict, card: str) -> None:
    save_weights(folder, state_dict=model.state_dict(), config=model.config, vocab=vocab,
                 metrics=metrics, card=card)
    print(f"weights written to {folder}")


@dataclass
class Prepared:
    """Everything the models of one run share: records, vocabulary and the feature cache."""
    dc: DataConfig
    records: list[ImageRecord]
    root: Path
    vocab: Vocab
    cache: FeatureCache
    counts: dict[str, int]


@dataclass
class Trained:
    model: CaptionModel
    tc: TrainConfig
    history: list[dict]
    seconds: float
    metrics: dict


def prepare(dc: DataConfig, cfg: ModelConfig, *, device: torch.device, progress: bool = True) -> Prepared:
    """Load (or generate) the data, build the vocabulary from train captions, extract features."""
    records, root = load_records(dc, progress=progress)
    counts = {s: sum(r.split == s for r in records) for s in ("train", "val", "test")}
    vocab = Vocab.build((c for r in records if r.split == "train" for c in r.captions),
                        min_freq=dc.min_freq, max_len=cfg.max_len)
    main_rank = D.current().is_main
    if main_rank:
        print(f"dataset {dc.dataset} at {root}: {counts}, vocabulary {len(vocab)}")
    cache = features_for(records, root, cfg, dc, device=device, progress=progress)
    if cache.failed and main_rank:
        print(f"skipped {len(cache.failed)} unreadable images, e.g. {next(iter(cache.failed.values()))}")
    return Prepared(dc, records, root, vocab, cache, counts)


def fit_and_evaluate(prep: Prepared, cfg: ModelConfig, tc: TrainConfig, *, run_dir: Path, beam_size: int,
                     device: torch.device, resume: bool = False, progress: bool = True,
                     scorer: CaptionScorer | None = None) -> Trained:
    """Train one model on the prepared data and score it on the test split (rank 0 only under torchrun:
    the other ranks return empty metrics)."""
    cfg = complete_config(cfg, prep.vocab, prep.cache)
    model, history, secs = train_one(cfg, tc, prep.dc, records=prep.records, cache=prep.cache, vocab=prep.vocab,
                                     run_dir=run_dir, device=device, resume=resume, progress=progress)
    if not D.current().is_main:
        return Trained(model, tc, history, secs, {})
    metrics = evaluate_on(model, prep.vocab, prep.records, prep.cache, split="test", beam_size=beam_size,
                          device=device, progress=progress, root=prep.root, scorer=scorer)
    metrics.update({"dataset": prep.dc.dataset, "train_seconds": round(secs, 1),
                    "params": sum(p.numel() for p in model.parameters() if p.requires_grad)})
    print(f"{'blind ' if cfg.blind else ''}{cfg.attention}/{cfg.decoder} on test:")
    write_metrics(metrics, None)
    return Trained(model, tc, history, secs, metrics)


TRAIN_CONFIG_FILE = "train_config.json"


def ship(out: Path, t: Trained, prep: Prepared, *, command: str) -> None:
    """Write a weights folder with its model card and the training settings that produced it."""
    card = model_card(cfg=t.model.config, tc=t.tc, dc=prep.dc, metrics=t.metrics, history=t.history,
                      seconds=t.seconds, command=command, counts=prep.counts)
    save_run(out, t.model, prep.vocab, t.metrics, card)
    (out / TRAIN_CONFIG_FILE).write_text(json.dumps(asdict(t.tc), indent=2) + "\n", encoding="utf-8")


def run_fit(cfg: ModelConfig, tc: TrainConfig, dc: DataConfig, *, out: Path, run_dir: Path | None = None,
            beam_size: int = 3, with_blind: bool = False, blind_epochs: int | None = None,
            resume: bool = False, device: str = "auto", progress: bool = True,
            command: str = "python -m train") -> dict:
    """Train (and the blind baseline when asked), evaluate on test, write the weights folder.

    Launched by torchrun, this process is one rank (see `train.distributed.init`)."""
    t_start = time.time()
    ctx, dev = D.init(device)
    try:
        return _run_fit(cfg, tc, dc, out=out, run_dir=run_dir, beam_size=beam_size, with_blind=with_blind,
                        blind_epochs=blind_epochs, resume=resume, dev=dev, progress=progress, command=command,
                        t_start=t_start)
    finally:
        D.shutdown()


def _run_fit(cfg: ModelConfig, tc: TrainConfig, dc: DataConfig, *, out: Path, run_dir: Path | None,
             beam_size: int, with_blind: bool, blind_epochs: int | None, resume: bool, dev: torch.device,
             progress: bool, command: str, t_start: float) -> dict:
    main_rank = D.current().is_main
    progress = progress and main_rank
    prep = prepare(dc, cfg, device=dev, progress=progress)
    run_dir = run_dir or (REPO / "runs" / out.name)
    # NOTE: the scorer starts Java (METEOR); only rank 0 scores anything
    with (CaptionScorer() if main_rank else contextlib.nullcontext()) as scorer:
        main = fit_and_evaluate(prep, cfg, tc, run_dir=run_dir, beam_size=beam_size, device=dev, resume=resume,
                                progress=progress, scorer=scorer)
        if with_blind:
            btc = TrainConfig(**{**asdict(tc), "epochs": blind_epochs or tc.epochs})
            blind = fit_and_evaluate(prep, cfg.replace(blind=True), btc, beam_size=beam_size, device=dev,
                                     run_dir=run_dir.with_name(run_dir.name + "-blind"), resume=resume,
                                     progress=progress, scorer=scorer)
            main.metrics["blind"] = blind.metrics
    if not main_rank:
        return {}
    main.metrics["total_seconds"] = round(time.time() - t_start, 1)
    ship(out, main, prep, command=command)
    print(f"total {main.metrics['total_seconds'] / 60:.1f} min")
    return main.metrics


def run_default(cfg: ModelConfig, tc: TrainConfig, dc: DataConfig, *, weights_root: Path, runs: Path,
                blind_epochs: int, beam_size: int = 3, device: str = "auto", progress: bool = True,
                command: str = "python -m train") -> dict[str, dict]:
    """The bundled weights: soft and hard attention (LSTM) plus the blind baseline, one data pass."""
    t_start = time.time()
    dev = device_from(device)
    prep = prepare(dc, cfg, device=dev, progress=progress)
    trained = {}
    with CaptionScorer() as scorer:
        for name in ("soft", "hard"):  # NOTE: in this order: hard starts from the soft weights folder
            vtc = variant_train_config(name, tc, source=weights_root / WARM_STARTS[name][0] if name in WARM_STARTS else None)
            trained[name] = fit_and_evaluate(prep, cfg.replace(**VARIANTS[name]), vtc, run_dir=runs / name,
                                             beam_size=beam_size, device=dev, progress=progress, scorer=scorer)
            ship(weights_root / name, trained[name], prep, command=command)
        btc = TrainConfig(**{**asdict(tc), "epochs": blind_epochs})
        blind = fit_and_evaluate(prep, cfg.replace(**VARIANTS["blind"]), btc, run_dir=runs / "blind", beam_size=beam_size,
                                 device=dev, progress=progress, scorer=scorer)
    total = round(time.time() - t_start, 1)
    for name, t in trained.items():
        t.metrics.update({"blind": blind.metrics, "total_seconds": total})
        ship(weights_root / name, t, prep, command=command)
    print(f"total {total / 60:.1f} min")
    return {name: t.metrics for name, t in trained.items()}


def run_evaluate(weights: Path, dc: DataConfig, *, split: str = "test", beam_size: int = 3,
                 json_out: Path | None = None, device: str = "auto", progress: bool = True) -> dict:
    """Evaluate a weights folder on a dataset split with the official metrics."""
    from sat.captioner import Captioner
    dev = device_from(device)
    cap = Captioner.load(weights, device=dev)
    records, root = load_records(dc, progress=progress)
    cache = features_for(records, root, cap.config, dc, device=dev, progress=progress)
    metrics = evaluate_on(cap.model, cap.vocab, records, cache, split=split, beam_size=beam_size,
                          device=dev, progress=progress, root=root)
    metrics["dataset"] = dc.dataset
    write_metrics(metrics, json_out)
    return metrics
