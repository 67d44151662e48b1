"""Feature cache: extract once, reuse, resume after a kill, skip broken images, never mix datasets."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sat.encoder import create_encoder, load_image, preprocess
from train import features as F


def make_images(folder, n, broken=()):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.png"
        if i in broken:
            p.write_bytes(b"garbage")
        else:
            rng = np.random.default_rng(i)
            Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def extract(paths, root, cache_dir, **kw):
    return F.extract_features(paths, [p.name for p in paths], encoder=create_encoder("test-tiny"),
                              image_size=64, resize="crop", dataset_root=root, cache_dir=cache_dir,
                              batch_size=3, progress=False, **kw)


def test_extract_matches_the_encoder_and_is_reused(tmp_path):
    paths = make_images(tmp_path / "imgs", 7)
    cache = extract(paths, tmp_path / "imgs", tmp_path / "cache")
    assert cache.maps.shape == (7, 16, 2, 2) and cache.maps.dtype == np.float16
    enc = create_encoder("test-tiny")
    with torch.inference_mode():
        ref = enc.encode_trunk(torch.stack([preprocess(load_image(p), image_size=64) for p in paths]))
    assert np.allclose(cache.maps, ref.numpy(), atol=2e-3, rtol=2e-3)
    mtime = (cache.path / F.DATA).stat().st_mtime_ns
    again = extract(paths, tmp_path / "imgs", tmp_path / "cache")
    assert again.path == cache.path and (again.path / F.DATA).stat().st_mtime_ns == mtime


def test_key_depends_on_root_encoder_settings_and_ids(tmp_path):
    enc = create_encoder("test-tiny")
    k = lambda **kw: F.cache_key(enc, **{"image_size": 64, "resize": "crop", "dataset_root": tmp_path / "a",
                                         "ids": ["x", "y"], **kw})
    base = k()
    assert base == k()
    assert len({base, k(image_size=96), k(resize="pad"), k(dataset_root=tmp_path / "b"), k(ids=["y", "x"])}) == 5
    assert base != F.cache_key(create_encoder("test-tiny", finetune_blocks=1), image_size=64, resize="crop",
                               dataset_root=tmp_path / "a", ids=["x", "y"])


def test_broken_images_are_skipped_and_counted(tmp_path):
    paths = make_images(tmp_path / "imgs", 5, broken={1, 3})
    cache = extract(paths, tmp_path / "imgs", tmp_path / "cache")
    assert sorted(cache.failed) == ["img1.png", "img3.png"]
    assert cache.valid.tolist() == [True, False, True, False, True]
    assert "img1.png" in cache.failed["img1.png"]
    assert not cache.maps[1].any()


def test_resume_after_kill_continues_and_never_serves_partial(tmp_path, monkeypatch):
    paths = make_images(tmp_path / "imgs", 8)
    calls = {"n": 0}
    real = F._load

    def dying_load(*a):
        calls["n"] += 1
        if calls["n"] > 4:  # die during the second batch
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(F, "_load", dying_load)
    with pytest.raises(KeyboardInterrupt):
        extract(paths, tmp_path / "imgs", tmp_path / "cache")
    (folder,) = (tmp_path / "cache").iterdir()
    assert F.open_cache(folder) is None  # unfinished: not served
    assert json.loads((folder / F.PROGRESS).read_text())["done"] == 3
    seen = []
    monkeypatch.setattr(F, "_load", lambda p, *a: seen.append(p.name) or real(p, *a))
    cache = extract(paths, tmp_path / "imgs", tmp_path / "cache")
    assert seen == [p.name for p in paths[3:]]  # the first batch was not redone
    full = extract(paths, tmp_path / "imgs", tmp_path / "fresh")
    assert np.array_equal(np.asarray(cache.maps), np.asarray(full.maps))


def test_arguments_checked(tmp_path):
    paths = make_images(tmp_path / "imgs", 2)
    with pytest.raises(ValueError):
        F.extract_features(paths, ["same", "same"], encoder=create_encoder("test-tiny"), image_size=64,
                           resize="crop", dataset_root=tmp_path, cache_dir=tmp_path / "c", progress=False)


def test_bf16_extraction_is_a_separate_cache_close_to_fp32(tmp_path):
    paths = make_images(tmp_path / "imgs", 4)
    fp32 = extract(paths, tmp_path / "imgs", tmp_path / "cache")
    bf16 = extract(paths, tmp_path / "imgs", tmp_path / "cache", bf16=True)
    assert bf16.path != fp32.path
    a, b = np.asarray(fp32.maps, dtype=np.float32), np.asarray(bf16.maps, dtype=np.float32)
    assert not np.array_equal(a, b)  # bf16 really ran
    assert np.abs(a - b).mean() < 0.02 * np.abs(a).mean() + 1e-3


def test_a_full_disk_is_refused_before_writing_with_one_line(tmp_path, monkeypatch):
    paths = make_images(tmp_path / "imgs", 5)
    real = F.shutil.disk_usage
    monkeypatch.setattr(F.shutil, "disk_usage", lambda p: real(p)._replace(free=100))
    with pytest.raises(OSError) as e:
        extract(paths, tmp_path / "imgs", tmp_path / "cache")
    msg = str(e.value)
    assert "\n" not in msg and F.DATA in msg
    assert "needs 0.6 KB more" in msg and "5 images" in msg, msg  # 5·16·2·2·2 bytes = 640 B
    assert not list((tmp_path / "cache").glob(f"*/{F.DATA}"))  # nothing memory-mapped on a full disk


def test_space_that_cannot_be_reserved_is_one_line(tmp_path, monkeypatch):
    paths = make_images(tmp_path / "imgs", 4)

    def no_space(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(F.os, "posix_fallocate", no_space, raising=False)
    with pytest.raises(OSError) as e:
        extract(paths, tmp_path / "imgs", tmp_path / "cache")
    msg = str(e.value)
    assert "\n" not in msg and F.DATA in msg and "needed" in msg and "No space left" in msg, msg
    monkeypatch.undo()  # space again: the same call builds the cache
    assert extract(paths, tmp_path / "imgs", tmp_path / "cache").maps.shape[0] == 4
