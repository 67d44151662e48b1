"""Streamed training batches (train/batches.py): rows read from the cache file, never the whole split."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from tests.train.test_loop import model, toy_data
from train import distributed as D
from train.batches import CaptionData, FeatureRows, StepBatches, batch_loader
from train.loop import TrainConfig, fit


def _memmap(tmp_path, maps: torch.Tensor) -> np.memmap:
    """`maps` written as a feature-cache file (raw float16), opened read-only like `open_cache`."""
    path = tmp_path / "features.f16"
    np.asarray(maps.numpy(), dtype=np.float16).tofile(path)
    return np.memmap(path, dtype=np.float16, mode="r", shape=tuple(maps.shape))


def _streamed(tmp_path, data: CaptionData, first: int = 3) -> CaptionData:
    """The same pairs, their maps read from a file whose training rows start at row `first`."""
    pad = torch.full((first, *data.maps.shape[1:]), 7.0, dtype=torch.float16)  # other splits' rows
    mm = _memmap(tmp_path, torch.cat([pad, data.maps]))
    rows = list(range(first, first + data.maps.shape[0]))
    return CaptionData(maps=FeatureRows(mm, rows), rows=data.rows, captions=data.captions)


def test_feature_rows_read_the_asked_rows_in_order(tmp_path):
    data = toy_data()
    fr = _streamed(tmp_path, data).maps
    idx = torch.tensor([5, 0, 5, 23, 2])  # repeats and any order
    assert fr.shape == tuple(data.maps.shape) and len(fr) == 24
    assert torch.equal(fr[idx], data.maps[idx]) and fr[idx].dtype == torch.float16
    assert torch.equal(fr.in_ram(), data.maps)


def test_feature_rows_pickle_as_the_path_not_the_data(tmp_path):
    maps = torch.randn(200, 16, 4, 4).half()  # 100 KB
    fr = FeatureRows(_memmap(tmp_path, maps), range(10, 200))
    blob = pickle.dumps(fr)
    assert len(blob) < 10_000
    back = pickle.loads(blob)
    assert torch.equal(back[torch.tensor([0, 189])], maps[[10, 199]])


def test_feature_rows_refuse_ram_arrays_and_bad_rows(tmp_path):
    with pytest.raises(TypeError, match="memmap"):
        FeatureRows(np.zeros((3, 2, 1, 1), np.float16), [0])
    with pytest.raises(ValueError, match="outside"):
        FeatureRows(_memmap(tmp_path, torch.zeros(3, 2, 1, 1)), [0, 3])


@pytest.mark.parametrize("world", [1, 2, 3])
def test_ranks_items_together_are_the_global_batch(world):
    data = toy_data()
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(1))
    per_rank = [StepBatches(data, perm, batch_size=10, pad_id=0, ctx=D.DistContext(rank=r, world=world))
                for r in range(world)]
    assert len(per_rank[0]) == 5  # 48 pairs: 4 batches of 10 and one of 8
    for b in range(5):
        items = [ds[b] for ds in per_rank]
        glob = perm[b * 10:(b + 1) * 10]
        got = torch.cat([it.captions for it in items if not it.dummy])
        want = data.captions[torch.cat([D.shard(glob, D.DistContext(rank=r, world=world)) for r in range(world)])]
        assert torch.equal(got, want[:, :got.size(1)]) and (want[:, got.size(1):] == 0).all()
        assert all(it.n_global == len(glob) for it in items)
        assert sum(it.n_local for it in items) == len(glob)
        assert items[0].tokens_global == float((data.captions[glob][:, 1:] != 0).sum())
        assert torch.equal(torch.cat([it.maps for it in items]), data.maps[data.rows[torch.cat(
            [D.shard(glob, D.DistContext(rank=r, world=world)) for r in range(world)])]])


def test_a_rank_without_rows_gets_one_zero_weight_row():
    data = toy_data()
    perm = torch.arange(len(data))
    last = StepBatches(data, perm, batch_size=47, pad_id=0, ctx=D.DistContext(rank=1, world=2))[1]
    assert last.dummy and last.n_local == 0 and last.captions.size(0) == 1 and last.n_global == 1
    assert not StepBatches(data, perm, batch_size=47, pad_id=0, ctx=D.DistContext(rank=0, world=2))[1].dummy


def test_loader_with_workers_yields_the_same_batches(tmp_path):
    data = _streamed(tmp_path, toy_data())
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(2))
    kw = dict(batch_size=7, pad_id=0, ctx=D.DistContext())
    inline = list(batch_loader(data, perm, workers=0, **kw))
    forked = list(batch_loader(data, perm, workers=2, **kw))
    assert len(inline) == len(forked) == 7
    for a, b in zip(inline, forked):
        assert torch.equal(a.maps, b.maps) and torch.equal(a.captions, b.captions)


@pytest.mark.slow
def test_training_streamed_from_the_file_equals_training_from_ram(tmp_path):
    data = toy_data()
    states = []
    for name, d, workers in (("ram", data, 0), ("file", _streamed(tmp_path, data), 2)):
        m = model()
        tc = TrainConfig(epochs=2, batch_size=8, lr=1e-2, workers=workers, early_stop=0)
        fit(m, data=d, validate=lambda _: 0.0, out_dir=tmp_path / name, config=tc, progress=False)
        states.append(m.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert any(not torch.equal(states[0][k], model().state_dict()[k]) for k in states[0])  # it trained
