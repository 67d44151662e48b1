"""Feature cache: extract once, reuse, resume after a kill, skip broken images, never mix datasets."""
from __future__ import annotations

import json
import threading

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


def extract(paths, root, cache_dir, workers=0, **kw):
    # NOTE: in-process decoding by default, so the monkeypatched `_load`s below run where the test sees them
    return F.extract_features(paths, [p.name for p in paths], encoder=create_encoder("test-tiny"),
                              image_size=64, resize="crop", dataset_root=root, cache_dir=cache_dir,
                              batch_size=3, progress=False, workers=workers, **kw)


@pytest.mark.parametrize("workers", [0, 2])
def test_extract_matches_the_encoder_and_is_reused(tmp_path, workers):
    paths = make_images(tmp_path / "imgs", 7)
    cache = extract(paths, tmp_path / "imgs", tmp_path / "cache", workers=workers)
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


@pytest.mark.parametrize("workers", [0, 2])
def test_broken_images_are_skipped_and_counted(tmp_path, workers):
    paths = make_images(tmp_path / "imgs", 5, broken={1, 3})
    cache = extract(paths, tmp_path / "imgs", tmp_path / "cache", workers=workers)
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


def test_decode_workers_write_the_same_bytes_and_resume_a_partial_cache(tmp_path, monkeypatch):
    paths = make_images(tmp_path / "imgs", 11, broken={4, 9})
    inline = extract(paths, tmp_path / "imgs", tmp_path / "inline", workers=0)
    pooled = extract(paths, tmp_path / "imgs", tmp_path / "pooled", workers=2)
    assert (inline.path / F.DATA).read_bytes() == (pooled.path / F.DATA).read_bytes()
    assert (inline.path / F.META).read_bytes() == (pooled.path / F.META).read_bytes()
    assert inline.maps[0].any() and not inline.maps[4].any()
    # killed during the third batch in-process, resumed by two workers: still the same bytes
    real, calls = F._load, {"n": 0}

    def dying_load(*a):
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(F, "_load", dying_load)
    with pytest.raises(KeyboardInterrupt):
        extract(paths, tmp_path / "imgs", tmp_path / "resumed", workers=0)
    monkeypatch.undo()
    (folder,) = (tmp_path / "resumed").iterdir()
    prog = json.loads((folder / F.PROGRESS).read_text())
    assert prog["done"] == 6 and list(prog["failed"]) == ["img4.png"]
    resumed = extract(paths, tmp_path / "imgs", tmp_path / "resumed", workers=2)
    assert (resumed.path / F.DATA).read_bytes() == (inline.path / F.DATA).read_bytes()
    assert resumed.failed == inline.failed == {k: inline.failed[k] for k in ("img4.png", "img9.png")}


def test_threads_decode_the_same_batches_in_order(tmp_path, monkeypatch):
    paths = make_images(tmp_path / "imgs", 7, broken={2, 5})
    pp = {"image_size": 64, "resize": "crop"}
    seen = []
    real = F._load

    def spy(path, preprocessing):
        seen.append(threading.current_thread().name)
        return real(path, preprocessing)

    monkeypatch.setattr(F, "_load", spy)
    one = F.ImageBatches(F.ImageFiles(paths, pp), batch_size=3, threads=1)
    three = F.ImageBatches(F.ImageFiles(paths, pp), batch_size=3, threads=3)
    assert len(one) == len(three) == 3  # 3 + 3 + 1 images
    for k in range(3):
        (xa, oka, erra), (xb, okb, errb) = one[k], three[k]
        assert torch.equal(xa, xb) and oka == okb and erra == errb
    assert one[0][1] == [0, 1] and list(one[0][2]) == [2] and "img2.png" in one[0][2][2]
    assert one[1][1] == [0, 1] and list(one[1][2]) == [2] and "img5.png" in one[1][2][2]  # rows 3-5
    assert one[2][0].shape == (1, 3, 64, 64)
    assert any(name.startswith("decode") for name in seen)  # the pool really decoded


def test_collate_keeps_failed_images_apart():
    a, b = torch.zeros(3, 4, 4), torch.ones(3, 4, 4)
    x, ok, errors = F.collate_images([a, "broken: x.png", b, "empty: y.png"])
    assert x.shape == (2, 3, 4, 4) and torch.equal(x[1], b) and ok == [0, 2]
    assert errors == {1: "broken: x.png", 3: "empty: y.png"}
    x, ok, errors = F.collate_images(["bad"])
    assert x is None and ok == [] and errors == {0: "bad"}


def test_decode_workers_default_and_bad_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(F.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    gpu = torch.device("cuda")
    assert F.decode_workers(device=gpu) == 8 and F.decode_workers(0, gpu) == 0 and F.decode_workers(11, gpu) == 11
    assert F.decode_workers() == 0 and F.decode_workers(device="cpu") == 0  # the CPU decodes with threads
    assert F.decode_workers(3, "cpu") == 3  # asked for: given
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # 8 ranks on 16 cores: 2 each
    assert F.decode_workers(device=gpu) == 2
    monkeypatch.setattr(F.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert F.decode_workers(device=gpu) == 1
    # threads: one per worker process; without workers, torch's threads (at most the cores)
    monkeypatch.setattr(F.torch, "get_num_threads", lambda: 4)
    assert F.decode_threads(2) == 1 and F.decode_threads(0) == 1  # one core allowed
    monkeypatch.setattr(F.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert F.decode_threads(0) == 4 and F.decode_threads(5) == 1
    with pytest.raises(ValueError, match="decode workers"):
        extract(make_images(tmp_path / "imgs", 2), tmp_path / "imgs", tmp_path / "c", workers=-1)
    assert not (tmp_path / "c").exists()


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


@pytest.mark.parametrize("setting, passed", [(-1, None), (0, 0), (3, 3)])
def test_data_config_extract_workers_reach_the_extraction(tmp_path, monkeypatch, setting, passed):
    from sat.config import ModelConfig
    from train import pipeline
    seen = {}
    monkeypatch.setattr(pipeline, "extract_features", lambda *a, **kw: seen.update(kw))
    pipeline.features_for([], tmp_path, ModelConfig(encoder="test-tiny"),
                          pipeline.DataConfig(cache_dir=str(tmp_path), extract_workers=setting),
                          device=torch.device("cpu"), encoder=create_encoder("test-tiny"))
    assert seen["workers"] == passed


def test_batches_are_pinned_for_cuda_only_and_pinning_keeps_the_batch(tmp_path, monkeypatch):
    from torch.utils.data._utils.pin_memory import pin_memory
    paths = make_images(tmp_path / "imgs", 3, broken={1})
    pp = {"image_size": 64, "resize": "crop"}
    assert F.image_loader(paths, pp, batch_size=2, workers=0, device=torch.device("cuda")).pin_memory is True
    assert F.image_loader(paths, pp, batch_size=2, workers=0, device=torch.device("cpu")).pin_memory is False
    # what the DataLoader's pinning thread does to a batch (pinning itself needs CUDA: marked instead)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: t.clone().fill_(7.0))
    x, ok, errors = next(iter(F.image_loader(paths, pp, batch_size=3, workers=0, device=torch.device("cpu"))))
    px, pok, perrors = pin_memory((x, ok, errors))
    assert (px == 7).all() and px.shape == (2, 3, 64, 64) and pok == ok == [0, 2]
    assert perrors == errors and list(errors) == [1] and "img1.png" in errors[1]
