"""Validation and evaluation read a split's maps from the memory-mapped cache a batch at a time
(`train.batches.FeatureRows`), never as one copy in RAM, and score exactly as the in-RAM copy did."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import train.pipeline as pipeline
from sat.config import ModelConfig
from train.batches import FeatureRows, split_rows
from train.evaluate import generate
from train.features import FeatureCache
from train.loop import TrainConfig
from train.pipeline import DataConfig, build_model, complete_config, evaluate_on, prepare, train_one

TIME_KEYS = ("train_seconds", "epoch_seconds")


def in_ram(array: np.ndarray, rows) -> torch.Tensor:
    """What validation and evaluation held before: the whole split copied (`FeatureCache.tensor`)."""
    return torch.from_numpy(np.ascontiguousarray(array[np.asarray(rows)]))


class BleuScorer:
    """The `CaptionScorer.score` interface with pycocoevalcap's BLEU only (no Java in this test)."""

    def score(self, refs: dict[str, list[str]], hyps: dict[str, str]) -> dict[str, float]:
        from pycocoevalcap.bleu.bleu import Bleu
        scores, _ = Bleu(4).compute_score(refs, {k: [v] for k, v in hyps.items()}, verbose=0)
        return {f"bleu{i + 1}": float(s) for i, s in enumerate(scores)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalstream")
    dc = DataConfig(data_root=str(tmp / "scenes"), cache_dir=str(tmp / "cache"), n_train=12, n_val=7, n_test=7,
                    scene_size=64, min_freq=1)
    prep = prepare(dc, ModelConfig(encoder="test-tiny", image_size=64, max_len=12), device=torch.device("cpu"),
                   progress=False)
    cfg = complete_config(ModelConfig(encoder="test-tiny", image_size=64, max_len=12, embed_dim=16,
                                      attention_dim=16, decoder_dim=16), prep.vocab, prep.cache)
    return dc, prep, cfg


@pytest.fixture
def reads(monkeypatch):
    """Every FeatureRows read as (its rows, how many read); and no whole-split copy allowed."""
    seen: list[tuple[tuple[int, ...], int]] = []
    get = FeatureRows.__getitem__

    def spy(self, idx):
        out = get(self, idx)
        seen.append((tuple(self.rows.tolist()), out.shape[0]))
        return out

    monkeypatch.setattr(FeatureRows, "__getitem__", spy)
    monkeypatch.setattr(FeatureCache, "tensor", lambda *a, **k: pytest.fail("a whole split was copied into RAM"))
    return seen


def test_generate_reads_a_split_batch_by_batch_and_captions_as_from_ram(tiny, reads):
    _, prep, cfg = tiny
    model = build_model(cfg, seed=0)
    rows = split_rows(prep.records, prep.cache, "val")
    streamed = FeatureRows(prep.cache.maps, rows)
    assert len(rows) == 7 and not isinstance(streamed, (np.ndarray, torch.Tensor))
    a = generate(model, streamed, vocab=prep.vocab, mode="greedy", batch_size=3)
    assert [n for _, n in reads] == [3, 3, 1]  # never more than a batch in RAM
    b = generate(model, in_ram(prep.cache.maps, rows), vocab=prep.vocab, mode="greedy", batch_size=3)
    assert [h.tokens for h in a] == [h.tokens for h in b]
    assert all(torch.equal(x.alphas, y.alphas) for x, y in zip(a, b))


@pytest.mark.slow
def test_validation_streams_the_split_and_trains_exactly_as_from_ram(tiny, tmp_path, reads, monkeypatch):
    dc, prep, cfg = tiny
    tc = TrainConfig(epochs=2, batch_size=8, workers=0, early_stop=0, captions_per_image=1)
    kw = dict(records=prep.records, cache=prep.cache, vocab=prep.vocab, device=torch.device("cpu"), resume=False,
              progress=False)
    _, streamed, _ = train_one(cfg, tc, dc, run_dir=tmp_path / "streamed", **kw)
    val = tuple(split_rows(prep.records, prep.cache, "val")[: dc.val_images])
    val_reads = [n for rows, n in reads if rows == val]
    assert len(val_reads) == 2 and all(n == len(val) for n in val_reads)  # once per epoch, from the file
    monkeypatch.setattr(pipeline, "FeatureRows", in_ram)  # validation as before: the split in RAM
    _, before, _ = train_one(cfg, tc, dc, run_dir=tmp_path / "ram", **kw)
    strip = [{k: v for k, v in row.items() if k not in TIME_KEYS} for row in streamed]
    assert strip == [{k: v for k, v in row.items() if k not in TIME_KEYS} for row in before]
    assert all(np.isfinite(row["val_score"]) for row in strip)


def test_evaluation_streams_the_split_and_scores_as_from_ram(tiny, reads, monkeypatch):
    """The test split with its scene truth: BLEU, grounding and steer_success (per-image reads)."""
    _, prep, cfg = tiny
    model = build_model(cfg, seed=0)
    kw = dict(split="test", beam_size=2, device=torch.device("cpu"), progress=False, root=prep.root,
              scorer=BleuScorer())
    streamed = evaluate_on(model, prep.vocab, prep.records, prep.cache, **kw)
    test = tuple(split_rows(prep.records, prep.cache, "test"))
    assert len(test) == 7 and max(n for rows, n in reads if rows == test) == 7  # one batch of 100 at most
    assert "grounding" in streamed and "steer_success" in streamed["grounding"]
    monkeypatch.setattr(pipeline, "FeatureRows", in_ram)  # evaluation as before: the split in RAM
    before = evaluate_on(model, prep.vocab, prep.records, prep.cache, **kw)
    # NOTE: JSON text, so NaN (an untrained model names no object to ground) compares equal to NaN
    assert json.dumps(before, sort_keys=True) == json.dumps(streamed, sort_keys=True)
    assert streamed["bleu1"] == before["bleu1"] and streamed["n_images"] == 7
