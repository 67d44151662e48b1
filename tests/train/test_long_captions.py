"""Captions longer than `max_len` are left out of training (and counted), never cut with an `<end>`."""
from __future__ import annotations


import numpy as np
import torch

from sat.vocab import Vocab
from train.data.karpathy import ImageRecord
from train.features import FeatureCache
from train.batches import caption_data
from train.pipeline import DataConfig, prepare
from sat.config import ModelConfig


def test_caption_data_leaves_out_captions_over_max_len(tmp_path):
    caps = {"a": [("a", "red", "star"), ("a", "red", "star", "left", "of", "a", "blue", "circle")],
            "b": [("a", "blue", "circle")]}
    records = [ImageRecord(k, tmp_path / f"{k}.png", "train", tuple(v), tuple(" ".join(c) for c in v)) for k, v in caps.items()]
    maps = np.memmap(tmp_path / "features.f16", dtype=np.float16, mode="w+", shape=(2, 4, 2, 2))  # as open_cache gives
    cache = FeatureCache(tmp_path, ["a", "b"], maps, {})
    vocab = Vocab.build([c for v in caps.values() for c in v], min_freq=1, max_len=4)
    data = caption_data(records, cache, vocab)
    assert len(data) == 2 and data.rows.tolist() == [0, 1]  # the 8-word caption is gone, not cut
    end = vocab.end_id
    assert all(end in row.tolist() for row in data.captions)  # every kept caption ends properly
    assert vocab.encode(list(caps["a"][1]))[-1] != end  # NOTE: encode itself never claims a cut caption ended


def test_prepare_counts_the_captions_it_leaves_out(tmp_path, capsys):
    dc = DataConfig(data_root=str(tmp_path / "scenes"), cache_dir=str(tmp_path / "cache"), n_train=12, n_val=2,
                    n_test=2, scene_size=64, min_freq=1)
    cfg = ModelConfig(encoder="test-tiny", image_size=64, max_len=6)
    prep = prepare(dc, cfg, device=torch.device("cpu"), progress=False)
    n_long = sum(len(c) > 6 for r in prep.records if r.split == "train" for c in r.captions)
    assert n_long > 0  # the scenes grammar has longer captions than 6 words: the check can fail
    assert f"{n_long} training captions over 6 words left out" in capsys.readouterr().out
    data = caption_data(prep.records, prep.cache, prep.vocab)
    n_train = sum(len(r.captions) for r in prep.records if r.split == "train")
    assert len(data) == n_train - n_long
