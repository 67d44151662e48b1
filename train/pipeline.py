"""Plain functions behind `python -m train`: data → feature cache → fit → evaluate → weights folder.

Each CLI subcommand maps to one function here (`run_fit`, `run_evaluate`, `run_default`).
`run_fit` also runs under `torchrun --nproc_per_node=N -m train fit ...`: every rank prepares
the data (rank 0 generates it first; feature extraction is sharded), every rank trains its share
of each global batch, and rank 0 alone evaluates and writes the weights folder.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sat.atomic import write_json
from sat.config import ModelConfig
from sat.device import resolve_device
from sat.encoder import Encoder, create_encoder
from sat.model import CaptionModel
from sat.paths import REPO
from sat.vocab import Vocab
from sat.weights import save_weights
from train.data.karpathy import ImageRecord, load_karpathy
from train import distributed as D
from train.evaluate import bleu4_quick, generate_words, score_split, write_metrics
from train.features import FeatureCache, extract_features
from train.card import model_card
from sat.search import compile_step
from train.batches import FeatureRows, caption_data, split_rows
from train.loop import TrainConfig, fit
from train.metrics import CaptionScorer
from train.ood_stats import write_ood_stats
from train.variants import VARIANTS, WARM_STARTS, resolve_init, variant_train_config, warm_start


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
    extract_workers: int = -1
    """Feature extraction: DataLoader processes decoding images while the encoder runs (-1 = automatic:
    min(8, CPU cores per process) on a GPU, none on a CPU; 0 = threads in the main process). The cache
    is the same whatever the count."""

    def __post_init__(self) -> None:
        if self.extract_workers < -1:
            raise ValueError(f"extract_workers must be -1 (automatic), 0 (decode in the main process) or more, "
                             f"got {self.extract_workers}")


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


def encoder_config(cfg: ModelConfig, *, pretrained: bool = True) -> tuple[Encoder, ModelConfig]:
    """Build cfg's encoder and fill in what it fixes: the preprocessing of its pretrained config
    (`image_size` when 0, crop_pct, interpolation, mean, std), D and the grid."""
    enc = create_encoder(cfg.encoder, feature_map=cfg.feature_map, pretrained=pretrained,
                         finetune_blocks=cfg.finetune_blocks)
    data = enc.data_config
    size = cfg.image_size or int(data["input_size"][-1])
    cfg = cfg.replace(image_size=size, crop_pct=float(data["crop_pct"]), interpolation=str(data["interpolation"]),
                      mean=tuple(float(m) for m in data["mean"]), std=tuple(float(s) for s in data["std"]),
                      encoder_dim=enc.dim, grid=enc.grid(size))
    return enc, cfg


def describe_encoder(cfg: ModelConfig, enc: Encoder) -> str:
    """One line: the encoder, its map (grid, D) and the preprocessing, printed when a run starts."""
    (h, w), r = cfg.grid, lambda xs: "(" + ", ".join(f"{x:.3g}" for x in xs) + ")"
    return (f"encoder {cfg.encoder}: feature map {cfg.feature_map} → grid {h}×{w}, D {cfg.encoder_dim}, "
            f"preprocessing {cfg.image_size} px {cfg.resize} (crop_pct {cfg.crop_pct:g}), {cfg.interpolation}, "
            f"mean {r(cfg.mean)}, std {r(cfg.std)}; weights {enc.weights}")


def features_for(records: list[ImageRecord], root: Path, cfg: ModelConfig, dc: DataConfig, *,
                 device: torch.device, progress: bool = True, encoder: Encoder | None = None) -> FeatureCache:
    """The feature cache of these records for cfg's encoder and preprocessing (`cfg.preprocessing`)."""
    if encoder is None:
        encoder = create_encoder(cfg.encoder, feature_map=cfg.feature_map, finetune_blocks=cfg.finetune_blocks)
    cache_dir = Path(dc.cache_dir) if dc.cache_dir else REPO / "cache" / "features"
    return extract_features([r.path for r in records], [r.image_id for r in records], encoder=encoder,
                            dataset_root=root, cache_dir=cache_dir, device=device, progress=progress,
                            bf16=dc.encoder_bf16, workers=None if dc.extract_workers == -1 else dc.extract_workers,
                            **cfg.preprocessing)


def build_model(cfg: ModelConfig, *, seed: int) -> CaptionModel:
    torch.manual_seed(seed)
    encoder = create_encoder(cfg.encoder, feature_map=cfg.feature_map, finetune_blocks=cfg.finetune_blocks)
    return CaptionModel(cfg, tail=encoder.tail)


def complete_config(cfg: ModelConfig, vocab: Vocab, cache: FeatureCache) -> ModelConfig:
    """Fill the fields fixed by the data and the encoder: vocabulary size, D, the grid and the
    preprocessing (`encoder_config`; the same values `prepare` extracted the features with)."""
    _, cfg = encoder_config(cfg, pretrained=False)
    if tuple(cache.maps.shape[2:]) != cfg.grid and cfg.finetune_blocks == 0:
        raise ValueError(f"the feature cache holds {tuple(cache.maps.shape[2:])} maps but {cfg.encoder} "
                         f"({cfg.feature_map}) gives {cfg.grid}")
    return cfg.replace(vocab_size=len(vocab), max_len=vocab.max_len)


def train_one(cfg: ModelConfig, tc: TrainConfig, dc: DataConfig, *, records: list[ImageRecord],
              cache: FeatureCache, vocab: Vocab, run_dir: Path, device: torch.device, resume: bool,
              progress: bool, tensorboard: Path | None = None) -> tuple[CaptionModel, list[dict], float]:
    """Fit one model; returns it (best epoch loaded), its history and the wall time in seconds.
    With `tensorboard`, rank 0 also logs each epoch there (train/tblog.py)."""
    data = caption_data(records, cache, vocab)
    val_rows = split_rows(records, cache, "val")[: dc.val_images]
    by_id = {r.image_id: r for r in records}
    val_refs = [by_id[cache.ids[i]].captions for i in val_rows]
    val_maps = FeatureRows(cache.maps, val_rows)  # NOTE: read batch by batch each validation, never copied whole

    def validate(m: CaptionModel) -> float:
        words = generate_words(m, vocab, val_maps, mode="greedy", device=device)
        return bleu4_quick(val_refs, words)

    objective, score_name = None, "BLEU-4"
    if tc.scst:  # NOTE: SCST validates on the reward of greedy captions (CIDEr-D: training df)
        from train.scst import scst_setup
        objective, validate, score_name = scst_setup(tc, records=records, cache=cache, vocab=vocab,
                                                     train_rows=split_rows(records, cache, "train"),  # data.maps rows
                                                     val_rows=val_rows, val_maps=val_maps, device=device)

    model = build_model(cfg, seed=tc.seed)
    if tc.init_from:
        warm_start(model, resolve_init(tc.init_from), vocab)
    if tc.compile:  # NOTE: validation's greedy search too (the training loss is compiled in fit)
        compile_step(model.decoder)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ctx = D.current()
    if ctx.is_main and ctx.active:
        print(f"data parallel: {ctx.world} ranks ({D.backend_for(device.type)}), global batch {tc.batch_size}, "
              f"about {-(-tc.batch_size // ctx.world)} pairs per rank")
    if ctx.is_main:
        print(f"training {'blind ' if cfg.blind else ''}{cfg.attention}/{cfg.decoder}: {n_params / 1e6:.2f} M "
              f"trainable parameters, {len(data)} pairs, {len(val_rows)} val images, device {device}")
    log = None
    if tensorboard is not None and ctx.is_main:
        from train.tblog import TensorBoardLog
        log = TensorBoardLog(tensorboard, vocab=vocab, maps=val_maps[:4], device=device,
                             images=[by_id[cache.ids[i]].path for i in val_rows[:4]])
    t0 = time.time()
    try:
        history = fit(model, data=data, validate=validate, out_dir=run_dir, config=tc, pad_id=vocab.pad_id,
                      resume=resume, device=device, progress=progress, on_epoch=log, objective=objective,
                      score_name=score_name)
    finally:
        if log is not None:
            log.close()
    return model, history, time.time() - t0


def evaluate_on(model: CaptionModel, vocab: Vocab, records: list[ImageRecord], cache: FeatureCache, *,
                split: str, beam_size: int, device: torch.device, progress: bool = True,
                root: Path | None = None, scorer: CaptionScorer | None = None, length_penalty: float = 0.0,
                no_repeat_ngram_size: int = 0) -> dict:
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
    # NOTE: the split's maps stay in the cache file; captioning reads them batch by batch
    metrics, _ = score_split(model, vocab, FeatureRows(cache.maps, rows), [list(r.raw) for r in recs], beam_size=beam_size,
                             device=device, progress=progress, ids=[r.image_id for r in recs], truth=truth,
                             scorer=scorer, length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
    metrics["split"] = split
    return metrics


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
    too_long = sum(len(c) > vocab.max_len for r in records if r.split == "train" for c in r.captions)
    if main_rank:
        print(f"dataset {dc.dataset} at {root}: {counts}, vocabulary {len(vocab)}, {too_long} training "
              f"captions over {vocab.max_len} words left out")
    encoder, full = encoder_config(cfg)
    if main_rank:
        print(describe_encoder(full, encoder))
    cache = features_for(records, root, full, dc, device=device, progress=progress, encoder=encoder)
    if cache.failed and main_rank:
        print(f"skipped {len(cache.failed)} unreadable images, e.g. {next(iter(cache.failed.values()))}")
    return Prepared(dc, records, root, vocab, cache, counts)


def fit_and_evaluate(prep: Prepared, cfg: ModelConfig, tc: TrainConfig, *, run_dir: Path, beam_size: int,
                     device: torch.device, resume: bool = False, progress: bool = True,
                     scorer: CaptionScorer | None = None, tensorboard: Path | None = None) -> Trained:
    """Train one model on the prepared data and score it on the test split (rank 0 only under torchrun:
    the other ranks return empty metrics)."""
    cfg = complete_config(cfg, prep.vocab, prep.cache)
    model, history, secs = train_one(cfg, tc, prep.dc, records=prep.records, cache=prep.cache, vocab=prep.vocab,
                                     run_dir=run_dir, device=device, resume=resume, progress=progress,
                                     tensorboard=tensorboard)
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
    write_json(out / TRAIN_CONFIG_FILE, asdict(t.tc), indent=2)
    try:
        write_ood_stats(out, prep.records, prep.cache, dataset=prep.dc.dataset, progress=False)
    except ValueError as e:  # NOTE: e.g. a dataset without a test split: the app then says "no check"
        print(f"no OOD statistics for {out}: {e}")


def run_fit(cfg: ModelConfig, tc: TrainConfig, dc: DataConfig, *, out: Path, run_dir: Path | None = None,
            beam_size: int = 3, with_blind: bool = False, blind_epochs: int | None = None,
            resume: bool = False, device: str = "auto", progress: bool = True,
            command: str = "python -m train", tensorboard: Path | None = None) -> dict:
    """Train (and the blind baseline when asked), evaluate on test, write the weights folder;
    `tensorboard`: a TensorBoard log folder (the blind baseline's in its `blind/` subfolder).

    Launched by torchrun, this process is one rank (see `train.distributed.init`)."""
    t_start = time.time()
    ctx, dev = D.init(device)
    try:
        return _run_fit(cfg, tc, dc, out=out, run_dir=run_dir, beam_size=beam_size, with_blind=with_blind,
                        blind_epochs=blind_epochs, resume=resume, dev=dev, progress=progress, command=command,
                        t_start=t_start, tensorboard=tensorboard)
    finally:
        D.shutdown()


def _run_fit(cfg: ModelConfig, tc: TrainConfig, dc: DataConfig, *, out: Path, run_dir: Path | None,
             beam_size: int, with_blind: bool, blind_epochs: int | None, resume: bool, dev: torch.device,
             progress: bool, command: str, t_start: float, tensorboard: Path | None = None) -> dict:
    main_rank = D.current().is_main
    progress = progress and main_rank
    prep = prepare(dc, cfg, device=dev, progress=progress)
    run_dir = run_dir or (REPO / "runs" / out.name)
    # NOTE: the scorer starts Java (METEOR); only rank 0 scores anything
    with (CaptionScorer() if main_rank else contextlib.nullcontext()) as scorer:
        main = fit_and_evaluate(prep, cfg, tc, run_dir=run_dir, beam_size=beam_size, device=dev, resume=resume,
                                progress=progress, scorer=scorer, tensorboard=tensorboard)
        if with_blind:
            btc = TrainConfig(**{**asdict(tc), "epochs": blind_epochs or tc.epochs})
            blind = fit_and_evaluate(prep, cfg.replace(blind=True), btc, beam_size=beam_size, device=dev,
                                     run_dir=run_dir.with_name(run_dir.name + "-blind"), resume=resume,
                                     progress=progress, scorer=scorer,
                                     tensorboard=tensorboard / "blind" if tensorboard else None)
            main.metrics["blind"] = blind.metrics
    if not main_rank:
        return {}
    main.metrics["total_seconds"] = round(time.time() - t_start, 1)
    ship(out, main, prep, command=command)
    print(f"total {main.metrics['total_seconds'] / 60:.1f} min")
    return main.metrics


def run_extract(cfg: ModelConfig, dc: DataConfig, *, device: str = "auto", progress: bool = True) -> FeatureCache:
    """`fit --extract-only`: load the data and fill its feature cache, then stop; the `fit` that follows
    with the same settings finds the cache complete and starts training at once. Under torchrun the
    ranks share the extraction, as in `fit`."""
    ctx, dev = D.init(device)
    try:
        cache = prepare(dc, cfg, device=dev, progress=progress and ctx.is_main).cache
    finally:
        D.shutdown()
    if ctx.is_main:
        n, c, h, w = cache.maps.shape  # (N, C, h, w) float16
        print(f"features: {n} images × {c}×{h}×{w} float16 = {cache.maps.nbytes / 1e9:.2f} GB in {cache.path}")
    return cache


def run_default(cfg: ModelConfig, tc: TrainConfig, dc: DataConfig, *, weights_root: Path, runs: Path,
                blind_epochs: int, beam_size: int = 3, device: str = "auto", progress: bool = True,
                command: str = "python -m train") -> dict[str, dict]:
    """The bundled weights: soft and hard attention (LSTM) plus the blind baseline, one data pass. Hard
    attention warm-starts from a mean-start soft model (WARM_STARTS), trained here too, kept in `runs/`."""
    t_start = time.time()
    dev = resolve_device(device)
    prep = prepare(dc, cfg, device=dev, progress=progress)
    trained, source = {}, WARM_STARTS["hard"][0]
    with CaptionScorer() as scorer:
        src_cfg = complete_config(cfg.replace(**VARIANTS[source]), prep.vocab, prep.cache)
        src_model, _, _ = train_one(src_cfg, tc, prep.dc, records=prep.records, cache=prep.cache, vocab=prep.vocab,
                                    run_dir=runs / source, device=dev, resume=False, progress=progress)
        src_folder = save_weights(runs / source / "weights", state_dict=src_model.state_dict(), config=src_cfg, vocab=prep.vocab)
        for name in ("soft", "hard"):
            vtc = variant_train_config(name, tc, source=src_folder if name in WARM_STARTS else None)
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


def run_evaluate(weights: str | Path, dc: DataConfig, *, split: str = "test", beam_size: int = 3,
                 json_out: Path | None = None, device: str = "auto", progress: bool = True,
                 length_penalty: float = 0.0, no_repeat_ngram_size: int = 0) -> dict:
    """Evaluate a weights folder (or hf://owner/repo[@revision]) on a dataset split with the official metrics."""
    from sat.captioner import Captioner
    dev = resolve_device(device)
    cap = Captioner.load(weights, device=dev)
    records, root = load_records(dc, progress=progress)
    cache = features_for(records, root, cap.config, dc, device=dev, progress=progress, encoder=cap.encoder)
    metrics = evaluate_on(cap.model, cap.vocab, records, cache, split=split, beam_size=beam_size,
                          device=dev, progress=progress, root=root, length_penalty=length_penalty,
                          no_repeat_ngram_size=no_repeat_ngram_size)
    metrics["dataset"] = dc.dataset
    write_metrics(metrics, json_out)
    return metrics
