"""`python -m train compare` on a tiny generated dataset: every row, the table, reuse on rerun."""
from __future__ import annotations

import json
import re

import pytest

from train.__main__ import main as train_main
from train.compare import NO_MODEL, VARIANTS, ceiling_split, word_frequency_caption


def test_word_frequency_caption_is_the_per_position_mode():
    caps = [["a", "red", "circle"], ["a", "blue", "circle"], ["a", "red", "star", "left"], ["the", "red", "x"]]
    assert word_frequency_caption(caps) == ["a", "red", "circle"]
    with pytest.raises(ValueError):
        word_frequency_caption([])


def test_reference_ceiling_is_the_last_reference_against_the_others():
    refs, caps = ceiling_split({"a": ["r1", "r2", "r3", "r4", "r5"], "b": ["only one"], "c": ["x", "y"]})
    assert refs == {"a": ["r1", "r2", "r3", "r4"], "c": ["x"]} and caps == {"a": "r5", "c": "y"}
    with pytest.raises(ValueError):
        ceiling_split({"b": ["only one"]})


@pytest.mark.slow
def test_compare_writes_every_row_and_reuses_trained_variants(tmp_path, capsys):
    args = ["compare", "--data-root", str(tmp_path / "scenes"), "--cache-dir", str(tmp_path / "cache"),
            "--n-train", "24", "--n-val", "4", "--n-test", "6", "--scene-size", "64", "--min-freq", "1",
            "--encoder", "test-tiny", "--image-size", "64", "--embed-dim", "8", "--attention-dim", "8",
            "--decoder-dim", "16", "--heads", "2", "--epochs", "1", "--batch-size", "16", "--beam-size", "2",
            "--out-dir", str(tmp_path / "out"), "--no-progress", "--device", "cpu"]
    import train.compare as C
    runs = tmp_path / "runs"
    orig = C.run_compare
    C.run_compare = lambda *a, **kw: orig(*a, runs=runs, **kw)  # keep runs/ of the repository clean
    try:
        assert train_main(args) == 0
        rows = json.loads((tmp_path / "out" / "results.json").read_text())
        assert [r["name"] for r in rows] == list(VARIANTS) + list(NO_MODEL)
        for r in rows:
            assert {"bleu4", "meteor", "rouge_l", "cider", "params", "train_seconds"} <= set(r), r["name"]
            assert ("grounding" in r) == (r["name"] not in NO_MODEL)
            if "grounding" in r:  # causal grounding next to pointing (train/steering.py)
                assert r["grounding"]["steer_chance"] == pytest.approx(1 / 6, abs=1e-4)
                assert r["grounding"]["steer_trials"] >= 0 and "steer_success" in r["grounding"]
        params = {r["name"]: r["params"] for r in rows}
        assert params["uniform"] < params["soft"] and params["word_frequency"] == 0
        by = {r["name"]: r for r in rows}
        # hard attention starts from the mean-start soft row's weights; its budget counts both trainings
        assert by["hard"]["init_from"] == "soft-mean" and "init_from" not in by["soft"]
        assert by["hard"]["train_seconds"] == pytest.approx(by["hard"]["own_train_seconds"] + by["soft-mean"]["train_seconds"], abs=0.11)
        hard_tc = json.loads((runs / "hard" / "weights" / "train_config.json").read_text())
        assert hard_tc["init_from"].endswith("soft-mean/weights") and hard_tc["epochs"] == 1
        # the start state each row was trained with: the flag's default (constant) unless VARIANTS says 'mean'
        start = {n: json.loads((runs / n / "weights" / "config.json").read_text())["init_state"]
                 for n in ("soft", "soft-mean", "hard", "dot")}
        assert start == {"soft": "zeros", "soft-mean": "mean", "hard": "mean", "dot": "mean"}
        table = (tmp_path / "out" / "results.md").read_text()
        assert "| pointing | chance | steer | params |" in table and "Steer: share of object words" in table
        assert all(f"| {name} |" in table for name in params if not by[name].get("init_from"))
        assert "| soft + SCST (from soft) |" in table and "| hard + SCST (from hard) |" in table
        assert json.loads((runs / "soft+scst" / "weights" / "train_config.json").read_text())["scst"] is True
        assert "| hard (from soft-mean) |" in table and "starts from the soft-mean row's weights" in table
        assert "mean annotation vector (§3.1.2) in the soft-mean, hard, dot, uniform, hard+scst rows" in table
        capsys.readouterr()
        assert train_main(args) == 0  # second run: nothing retrained
        out = capsys.readouterr().out
        assert out.count("reusing") == len(VARIANTS) and not re.search(r"^training ", out, flags=re.M)  # no model trained
        again = json.loads((tmp_path / "out" / "results.json").read_text())
        assert [r["bleu4"] for r in again] == pytest.approx([r["bleu4"] for r in rows])
    finally:
        C.run_compare = orig
