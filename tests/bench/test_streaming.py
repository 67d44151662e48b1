"""The COCO-scale streaming bench's harness (tiny sizes; never a speed assertion): its synthetic cache is
a feature cache `train.features.open_cache` serves, its captions score a known token count, and a
training child reports its figures."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import streaming as S
from train import features as F


def test_synthetic_cache_is_a_feature_cache_open_cache_serves(tmp_path):
    cache = S.write_synthetic_cache(tmp_path / "c", images=37, map_shape=(4, 3, 3), chunk=8, progress=False)
    served = F.open_cache(tmp_path / "c")
    assert served is not None and served.path == cache.path
    assert served.maps.shape == (37, 4, 3, 3) and served.maps.dtype == np.float16
    assert (tmp_path / "c" / F.DATA).stat().st_size == 37 * 4 * 3 * 3 * 2
    assert len(set(served.ids)) == 37 and served.failed == {} and served.valid.all()
    a = np.asarray(served.maps, dtype=np.float32)
    assert (a >= 0).all() and a.reshape(37, -1).any(1).all()  # no empty row: every chunk was written
    assert len(np.unique(a.reshape(37, -1), axis=0)) > 20  # random-ish, not one row repeated
    assert served.tensor([3, 5]).shape == (2, 4, 3, 3)
    mtime = (tmp_path / "c" / F.DATA).stat().st_mtime_ns
    S.write_synthetic_cache(tmp_path / "c", images=37, map_shape=(4, 3, 3), progress=False)
    assert (tmp_path / "c" / F.DATA).stat().st_mtime_ns == mtime  # reused, not rewritten
    bigger = S.write_synthetic_cache(tmp_path / "c", images=40, map_shape=(4, 3, 3), progress=False)
    assert bigger.maps.shape == (40, 4, 3, 3) and F.open_cache(tmp_path / "c").maps.shape[0] == 40


def test_a_disk_without_room_is_one_line_and_nothing_is_served(tmp_path, monkeypatch):
    real = S.shutil.disk_usage
    monkeypatch.setattr(S.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(OSError) as e:
        S.write_synthetic_cache(tmp_path / "c", images=50, map_shape=(4, 3, 3), progress=False)
    assert "\n" not in str(e.value) and "--coco-dir" in str(e.value)
    assert F.open_cache(tmp_path / "c") is None


def test_synthetic_captions_have_a_known_token_count():
    rows, caps = S.synthetic_captions(7, per_image=5, words=4, vocab=30)
    assert rows.tolist() == [i for i in range(7) for _ in range(5)]
    assert caps.shape == (35, 6) and (caps[:, 0] == 1).all() and (caps[:, -1] == 2).all()
    assert ((caps[:, 1:-1] >= 4) & (caps[:, 1:-1] < 30)).all()  # words only: no pad/start/end/unk


@pytest.mark.parametrize("mode, workers", [("ram", 0), ("stream", 2)])
def test_a_training_child_reports_its_figures(tmp_path, capsys, mode, workers):
    S.write_synthetic_cache(tmp_path / "c", images=30, map_shape=(8, 2, 2), progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = S.train_child(["--coco-dir", str(tmp_path / "c"), "--mode", mode, "--steps", "3", "--batch", "4",
                             "--workers", str(workers), "--quick"])
    finally:
        torch.set_num_threads(threads)
    assert out["steps"] == 3 and out["images"] == 30 and out["pairs"] == 150 and out["tokens_per_s"] > 0
    assert out["peak_rss_mb"] > 50 and out["workers"] == workers
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f'{{"mode": "{mode}"')


def test_the_stream_child_never_copies_the_split(tmp_path, monkeypatch):
    from train import loop
    S.write_synthetic_cache(tmp_path / "c", images=30, map_shape=(8, 2, 2), progress=False)
    seen = {}
    real_fit = loop.fit
    monkeypatch.setattr(loop.FeatureRows, "in_ram", lambda self: pytest.fail("stream mode copied the split"))
    monkeypatch.setattr(loop, "fit", lambda model, data, **kw: seen.update(maps=data.maps) or real_fit(
        model, data=data, **kw))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        S.train_child(["--coco-dir", str(tmp_path / "c"), "--mode", "stream", "--steps", "2", "--batch", "4",
                       "--workers", "0", "--quick"])
    finally:
        torch.set_num_threads(threads)
    assert isinstance(seen["maps"], loop.FeatureRows) and seen["maps"].shape == (30, 8, 2, 2)
