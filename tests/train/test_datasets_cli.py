"""The public CLI on every real-dataset layout: `python -m train fit` for a few steps (which also
scores the test split), `evaluate` on the weights it wrote, and a wrong --data-root.

Each fit runs the official metrics (Java METEOR start-up), so the layouts share one parametrised
test and only Flickr8k is evaluated a second time.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from train.__main__ import main as train_main

from .conftest import write_coco, write_csv, write_flickr8k, write_flickr30k

TINY = ["--encoder", "test-tiny", "--image-size", "64", "--epochs", "1", "--max-steps", "3", "--batch-size", "8",
        "--min-freq", "1", "--embed-dim", "8", "--attention-dim", "8", "--decoder-dim", "16", "--val-images", "4",
        "--beam-size", "1"]
LAYOUTS = {
    "flickr8k": lambda root: write_flickr8k(root, n=10),
    "flickr30k": lambda root: write_flickr30k(root, n=10, variant="csv"),
    "coco": lambda root: write_coco(root, n_train=5, n_val=5),
    "csv": lambda root: write_csv(root, n=10),
}


def _common(name: str, root: Path, tmp: Path) -> list[str]:
    return ["--dataset", name, "--data-root", str(root), "--cache-dir", str(tmp / "cache"), "--no-progress",
            "--device", "cpu"]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@pytest.mark.slow
def test_fit_on_each_layout(name: str, tmp_path: Path, capsys) -> None:
    root = tmp_path / name
    LAYOUTS[name](root)
    out = tmp_path / "weights"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # NOTE: the CSV layout also trains with --compile: a tiny `fit --compile` through the CLI
        code = train_main(["fit", "--out", str(out), "--run-dir", str(tmp_path / "run"), *TINY,
                           *_common(name, root, tmp_path), *(["--compile"] if name == "csv" else [])])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    if name == "csv":
        assert "compile: true" in (out / "run_config.yaml").read_text()
        assert json.loads((tmp_path / "run" / "history.json").read_text())[-1]["steps"] >= 1
    assert f"{name} from {root}" in stdout and "skipped:" in stdout  # the load summary came first
    assert stdout.index(f"{name} from") < stdout.index("training ")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == name and metrics["n_images"] >= 1
    if name != "flickr8k":
        return
    ood = json.loads((out / "ood.json").read_text())  # shipped with its OOD statistics (train/ood_stats.py)
    assert ood["dataset"] == name and ood["n_train"] == 6 and ood["n_test"] == 2
    report = tmp_path / "eval.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = train_main(["evaluate", "--weights", str(out), "--beam-size", "1", "--json", str(report),
                           *_common(name, root, tmp_path)])
    assert code == 0
    again = json.loads(report.read_text())
    assert again["n_images"] == 2 and again["bleu4"] == pytest.approx(metrics["bleu4"], abs=1e-6)


@pytest.mark.parametrize("name, looked_for", [
    ("flickr8k", "flickr8k: looked for Flicker8k_Dataset/"),
    ("flickr30k", "flickr30k: looked for flickr30k-images/"),
    ("coco", "coco: looked for train2014/, val2014/"),
    ("csv", "csv: looked for one *.csv or *.jsonl"),
    ("karpathy", "karpathy: looked for one dataset_*.json"),
])
def test_wrong_data_root_exits_2_with_the_layout(name: str, looked_for: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "holiday-photos").mkdir()
    (tmp_path / "readme.txt").write_text("hi")
    code = train_main(["fit", "--out", str(tmp_path / "w"), *TINY, *_common(name, tmp_path, tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: {looked_for}" in err
    assert f"in {tmp_path}" in err and "found: holiday-photos/, readme.txt" in err


@pytest.mark.slow
def test_extract_only_fills_the_cache_and_trains_nothing(tmp_path: Path, capsys) -> None:
    root = tmp_path / "flickr8k"
    write_flickr8k(root, n=10)
    out = tmp_path / "weights"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = train_main(["fit", "--out", str(out), "--run-dir", str(tmp_path / "run"), "--extract-only", *TINY,
                           *_common("flickr8k", root, tmp_path)])
    stdout = capsys.readouterr().out
    assert code == 0
    (folder,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    meta = json.loads((folder / "meta.json").read_text())
    assert (folder / "features.f16").stat().st_size == 10 * 16 * 2 * 2 * 2  # N × C × h × w × 2 bytes
    assert meta["shape"] == [10, 16, 2, 2] and f"features: 10 images × 16×2×2 float16 = 0.00 GB in {folder}" in stdout
    assert "training soft" not in stdout and not out.exists() and not (tmp_path / "run").exists()
