"""End to end through the public CLIs: generate a tiny scenes dataset, `python -m train fit`, then
`python -m train evaluate` and `python -m sat` on the weights it wrote."""
from __future__ import annotations

import json

import pytest

from sat.__main__ import main as sat_main
from train.__main__ import main as train_main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    common = ["--data-root", str(tmp / "scenes"), "--cache-dir", str(tmp / "cache"), "--n-train", "48",
              "--n-val", "8", "--n-test", "8", "--scene-size", "128", "--min-freq", "1", "--no-progress",
              "--device", "cpu"]
    code = train_main(["fit", "--out", str(tmp / "weights"), "--run-dir", str(tmp / "run"),
                       "--encoder", "test-tiny", "--image-size", "128", "--epochs", "4", "--batch-size", "16",
                       "--lr", "0.02", "--dropout", "0", "--alpha-c", "0", "--embed-dim", "16", "--attention-dim", "16", "--decoder-dim", "32",
                       "--with-blind", "--beam-size", "2", *common])
    assert code == 0
    return tmp, common


def test_fit_writes_a_complete_weights_folder_and_the_loss_falls(trained):
    tmp, _ = trained
    for name in ("model.safetensors", "config.json", "vocab.json", "metrics.json", "README.md"):
        assert (tmp / "weights" / name).is_file(), name
    hist = json.loads((tmp / "run" / "history.json").read_text())
    assert hist[-1]["train_xent"] < hist[0]["train_xent"]
    metrics = json.loads((tmp / "weights" / "metrics.json").read_text())
    keys = {"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider", "n_images", "beam_size"}
    assert keys <= set(metrics) and keys <= set(metrics["blind"])
    assert metrics["n_images"] == 8 and metrics["beam_size"] == 2
    assert "python -m train fit" in (tmp / "weights" / "README.md").read_text()


def test_evaluate_cli_reproduces_the_shipped_metrics(trained, capsys):
    tmp, common = trained
    out = tmp / "eval.json"
    assert train_main(["evaluate", "--weights", str(tmp / "weights"), "--beam-size", "2", "--json", str(out),
                       *common]) == 0
    again = json.loads(out.read_text())
    shipped = json.loads((tmp / "weights" / "metrics.json").read_text())
    for k in ("bleu4", "cider", "meteor"):
        assert again[k] == pytest.approx(shipped[k], abs=1e-6)


def test_a_caption_comes_out(trained, capsys):
    tmp, _ = trained
    image = next((tmp / "scenes" / "images").glob("*.jpg"))
    assert sat_main([str(image), "--weights", str(tmp / "weights"), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["words"] and len(rec["attention"]) == len(rec["tokens"])


def test_wrong_data_root_is_a_clear_error(tmp_path, capsys):
    code = train_main(["evaluate", "--weights", str(tmp_path / "w"), "--dataset", "karpathy",
                       "--data-root", str(tmp_path / "nothing-here")])
    assert code == 2 and "error:" in capsys.readouterr().err
