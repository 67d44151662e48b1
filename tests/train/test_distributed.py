"""Data parallelism on CPU: two gloo ranks on localhost train to the same weights as one process with
the same global batch; sharded feature extraction writes the same cache; the GPU-only choices
(backend, device per rank, bf16 autocast) are exercised as plain functions on CPU."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sat.paths import REPO
from train import distributed as D
from train.loop import TrainConfig

WORKER = Path(__file__).with_name("dist_worker.py")


def launch(nproc: int, *args: str, timeout: int = 120) -> None:
    """The worker as `torchrun --standalone --nproc_per_node=nproc` (or one plain process)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, str(WORKER), *args]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(WORKER), *args]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_backend_device_and_environment_are_plain_functions():
    assert D.backend_for("cuda") == "nccl" and D.backend_for("cpu") == "gloo"
    assert D.device_for("auto", local_rank=3, world=4, cuda_available=True) == torch.device("cuda", 3)
    assert D.device_for("cuda", local_rank=1, world=2, cuda_available=True) == torch.device("cuda", 1)
    assert D.device_for("auto", cuda_available=True) == torch.device("cuda")
    assert D.device_for("auto", local_rank=1, world=2, cuda_available=False) == torch.device("cpu")
    assert D.device_for("cuda:5", local_rank=1, world=2) == torch.device("cuda", 5)  # explicit wins
    ctx = D.env_context({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (ctx.rank, ctx.world, ctx.local_rank, ctx.is_main, ctx.active) == (3, 4, 1, False, True)
    assert D.env_context({}) == D.DistContext() and D.current() == D.DistContext()
    with pytest.raises(ValueError, match="torchrun"):
        D.env_context({"RANK": "2", "WORLD_SIZE": "2"})
    # without a process group every collective is the identity
    t = torch.ones(3)
    D.all_reduce_sum_([t])
    assert t.tolist() == [1, 1, 1] and D.broadcast_object(7) == 7 and D.gather_objects("x") == ["x"]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_of_a_global_batch_are_exactly_that_batch(world):
    batch = torch.randperm(50)[:9]
    parts = [D.shard(batch, D.DistContext(rank=r, world=world)) for r in range(world)]
    assert sorted(torch.cat(parts).tolist()) == sorted(batch.tolist())
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    rows = [D.shard_rows(11, D.DistContext(rank=r, world=world)) for r in range(world)]
    assert sorted(sum(rows, [])) == list(range(11))


@pytest.mark.slow
def test_bf16_autocast_path_runs_on_cpu(tmp_path):
    from tests.train.dist_worker import toy_data
    from train.loop import fit
    from sat.config import ModelConfig
    from sat.model import CaptionModel

    with D.autocast(torch.device("cpu"), True):
        y = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
    assert y.dtype == torch.bfloat16
    with D.autocast(torch.device("cpu"), False):
        assert torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4)).dtype == torch.float32
    hist = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        cfg = ModelConfig(encoder="test-tiny", encoder_dim=8, grid=(2, 2), vocab_size=10, embed_dim=8,
                          attention_dim=8, decoder_dim=16, dropout=0.0)
        m = CaptionModel(cfg)
        tc = TrainConfig(epochs=1, batch_size=8, lr=1e-2, bf16=bf16)
        hist[bf16] = fit(m, data=toy_data(), validate=lambda _: 0.0, out_dir=tmp_path / str(bf16), config=tc,
                         progress=False)
        assert all(p.dtype == torch.float32 for p in m.parameters())  # autocast never casts the weights
    a, b = hist[False][-1]["train_loss"], hist[True][-1]["train_loss"]
    assert np.isfinite(b) and a != b and abs(a - b) < 0.05 * a  # bf16 really ran, and stayed close


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--batch-size", "13"], ["--compile", "--epochs", "1"]],
                         ids=["ddp", "empty-rank", "compiled"])
def test_two_gloo_ranks_train_like_one_process(tmp_path, extra):
    """DDP (gloo) with 2 ranks equals one process with the same global batch. `--batch-size 13`:
    the last global batch of 40 pairs has one row, so rank 1 has none in that step; `--compile`:
    torch.compile of the DDP-wrapped model on both sides."""
    timeout = 600 if "--compile" in extra else 120  # NOTE: inductor compiles C++ on each rank first
    launch(1, "fit", str(tmp_path / "one"), *extra, timeout=timeout)
    launch(2, "fit", str(tmp_path / "two"), *extra, timeout=timeout)
    one = torch.load(tmp_path / "one" / "result.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "result.pt", weights_only=True)
    assert (one["world"], two["world"]) == (1, 2)
    # NOTE: the softmax ignores the score bias, so its gradient is pure rounding noise, which Adam
    # scales up to full-size steps: it differs between any two summation orders.
    noise = {"decoder.attention.score.bias"}
    for k, v in one["state"].items():
        if k not in noise:
            assert torch.allclose(v, two["state"][k], atol=1e-5, rtol=1e-4), k
    for h1, h2 in zip(one["history"], two["history"], strict=True):
        assert h2["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-5)
        assert h2["train_xent"] == pytest.approx(h1["train_xent"], rel=1e-5)
        assert h2["train_att_reg"] == pytest.approx(h1["train_att_reg"], rel=1e-5)
        assert h2["val_score"] == h1["val_score"] and h2["lr"] == h1["lr"]
    r0, r1 = (torch.load(tmp_path / "two" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # the ranks never drift apart
    assert sorted(p.name for p in (tmp_path / "two" / "run").iterdir()) == sorted(
        p.name for p in (tmp_path / "one" / "run").iterdir())  # rank 0 wrote the same files


@pytest.mark.slow
def test_hard_attention_ranks_stay_in_step(tmp_path):
    # NOTE: hard attention samples differ per rank (and from one process), so only agreement
    # between the ranks is checked here, plus that differing per-rank stats do not hang the run.
    launch(2, "fit", str(tmp_path / "hard"), "--attention", "hard", "--batch-size", "8")
    r0, r1 = (torch.load(tmp_path / "hard" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)


def _images(folder: Path, n: int, broken: set[int]) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        p = folder / f"img{i:02d}.png"
        if i in broken:
            p.write_bytes(b"not an image")
        else:
            rng = np.random.default_rng(i)
            Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(p)


@pytest.mark.slow
def test_sharded_feature_extraction_equals_one_process(tmp_path):
    _images(tmp_path / "imgs", 9, broken={4, 7})
    launch(1, "features", str(tmp_path / "one"), str(tmp_path / "imgs"), str(tmp_path / "cache1"))
    launch(2, "features", str(tmp_path / "two"), str(tmp_path / "imgs"), str(tmp_path / "cache2"))
    one = torch.load(tmp_path / "one" / "result.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "result.pt", weights_only=True)
    assert one["ids"] == two["ids"] and list(two["failed"]) == ["img04.png", "img07.png"]
    assert two["failed"] == one["failed"]
    assert torch.equal(one["maps"], two["maps"]) and one["maps"][[0, 8]].abs().sum() > 0
    cache2 = Path(two["path"])
    assert {p.name for p in cache2.glob("progress*.json")} == {"progress.json", "progress.rank1.json"}
    # the merged cache is complete: a single process now serves it without extracting anything
    from train.features import open_cache
    served = open_cache(cache2)
    assert served is not None and np.array_equal(np.asarray(served.maps), one["maps"].numpy())


@pytest.mark.slow
def test_torchrun_cli_fit_writes_one_weights_folder(tmp_path):
    """`torchrun -m train fit` end to end: scenes written once, features sharded, rank 0 alone
    evaluates and writes the weights; `--batch-size` is the global batch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "train",
           "fit", "--out", str(tmp_path / "w"), "--run-dir", str(tmp_path / "run"), "--data-root",
           str(tmp_path / "scenes"), "--cache-dir", str(tmp_path / "cache"), "--n-train", "24", "--n-val", "4",
           "--n-test", "4", "--scene-size", "96", "--min-freq", "1", "--no-progress", "--device", "cpu",
           "--encoder", "test-tiny", "--image-size", "96", "--epochs", "1", "--batch-size", "12",
           "--embed-dim", "8", "--attention-dim", "8", "--decoder-dim", "16", "--beam-size", "1"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("weights written to") == 1 and out.stdout.count("epoch   1 |") == 1
    assert "data parallel: 2 ranks (gloo), global batch 12" in out.stdout
    assert (tmp_path / "w" / "model.safetensors").is_file() and (tmp_path / "run" / "last.pt").is_file()
    (cache,) = (tmp_path / "cache").iterdir()
    assert {p.name for p in cache.iterdir()} >= {"meta.json", "progress.json", "progress.rank1.json"}
