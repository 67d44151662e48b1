"""`python -m train ood-stats`: an existing weights folder gets OOD statistics from its training
data (fitted on the train split, thresholded on the test split), and the captioner then uses them;
a folder or dataset that does not fit exits 2 with one line."""
from __future__ import annotations

import json
from pathlib import Path

from sat.captioner import Captioner
from sat.ood import INFO_FILE, STATS_FILE
from tests.conftest import make_tiny_weights
from train.__main__ import main as train_main

from .conftest import write_csv


def _args(root: Path, tmp: Path) -> list[str]:
    return ["--dataset", "csv", "--data-root", str(root), "--cache-dir", str(tmp / "cache"), "--no-progress",
            "--device", "cpu"]


def test_ood_stats_adds_statistics_to_an_existing_folder(tmp_path, capsys):
    root = tmp_path / "data"
    write_csv(root, n=12, with_split=True, bad_rows=False)  # 10 train, 1 val, 1 test
    weights = make_tiny_weights(tmp_path / "w")
    assert Captioner.load(weights, device="cpu").ood is None
    assert train_main(["ood-stats", "--weights", str(weights), *_args(root, tmp_path)]) == 0
    assert "OOD statistics written" in capsys.readouterr().out
    info = json.loads((weights / INFO_FILE).read_text())
    assert info["dataset"] == "csv" and info["n_train"] == 10 and info["n_test"] == 1 and info["dim"] == 16
    assert (weights / STATS_FILE).stat().st_size < 10_000
    cap = Captioner.load(weights, device="cpu")
    assert cap.ood is not None and cap.ood_error == ""
    out = cap.caption(root / "photos" / "p11.png", mode="greedy")  # the test image: at the threshold
    assert out.ood is not None and out.ood.flagged is False
    assert out.ood.distance == round(cap.ood.threshold, 3)


def test_ood_stats_on_a_broken_folder_or_no_test_split_exits_2(tmp_path, capsys):
    root = tmp_path / "data"
    write_csv(root, n=6, with_split=True, bad_rows=False)
    assert train_main(["ood-stats", "--weights", str(tmp_path / "nope"), *_args(root, tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    nosplit = tmp_path / "nosplit"
    write_csv(nosplit, n=3, with_split=False, bad_rows=False)
    weights = make_tiny_weights(tmp_path / "w")
    code = train_main(["ood-stats", "--weights", str(weights), *_args(nosplit, tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and len(err.strip().splitlines()) == 1, err
