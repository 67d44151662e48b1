"""End to end through the public CLIs: generate a tiny scenes dataset, `python -m train fit`, then
`python -m train evaluate` and `python -m sat` on the weights it wrote."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from sat.__main__ import main as sat_main
from sat.paths import REPO
from tests.test_hub import MAIN, add_snapshot, set_ref
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_evaluate_cli_reproduces_the_shipped_metrics(trained, capsys):
    tmp, common = trained
    out = tmp / "eval.json"
    assert train_main(["evaluate", "--weights", str(tmp / "weights"), "--beam-size", "2", "--json", str(out),
                       *common]) == 0
    again = json.loads(out.read_text())
    shipped = json.loads((tmp / "weights" / "metrics.json").read_text())
    for k in ("bleu4", "cider", "meteor"):
        assert again[k] == pytest.approx(shipped[k], abs=1e-6)


@pytest.mark.slow
def test_evaluate_takes_the_decoding_options(trained, capsys):
    tmp, common = trained
    out = tmp / "eval_options.json"
    assert train_main(["evaluate", "--weights", str(tmp / "weights"), "--beam-size", "2", "--length-penalty", "1",
                       "--no-repeat-ngram-size", "2", "--json", str(out), *common]) == 0
    m = json.loads(out.read_text())
    assert m["length_penalty"] == 1.0 and m["no_repeat_ngram_size"] == 2 and 0 <= m["truncated"] <= m["n_images"]
    for bad, needle in ((["--length-penalty", "-1"], "--length-penalty: must be a number in [0, 5], got -1"),
                        (["--no-repeat-ngram-size", "x"], "--no-repeat-ngram-size: expected an integer")):
        with pytest.raises(SystemExit) as e:
            train_main(["evaluate", "--weights", str(tmp / "weights"), *bad, *common])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and needle in err[-1] and "Traceback" not in "\n".join(err)


@pytest.mark.slow
def test_a_caption_comes_out(trained, capsys):
    tmp, _ = trained
    image = next((tmp / "scenes" / "images").glob("*.jpg"))
    assert sat_main([str(image), "--weights", str(tmp / "weights"), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["words"] and len(rec["attention"]) == len(rec["tokens"])


@pytest.mark.slow
def test_hub_specs_are_read_wherever_weights_are(trained, tmp_path):
    """`hf://owner/repo[@revision]` through one resolver in `train evaluate`, `python -m sat` and
    `Captioner.load`, offline, from a cache in huggingface_hub's layout (see tests/test_hub.py)."""
    tmp, common = trained
    repo_dir = tmp_path / "hub" / "models--owner--e2e"
    add_snapshot(repo_dir, MAIN, tmp / "weights")
    set_ref(repo_dir, "main", MAIN)
    set_ref(repo_dir, "v2", MAIN)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    run = lambda *args: subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                                       text=True, timeout=300)
    out = run("-m", "train", "evaluate", "--weights", "hf://owner/e2e@v2", "--beam-size", "2",
              "--json", str(tmp_path / "eval.json"), *common)
    assert out.returncode == 0, out.stderr
    shipped = json.loads((tmp / "weights" / "metrics.json").read_text())
    assert json.loads((tmp_path / "eval.json").read_text())["cider"] == pytest.approx(shipped["cider"], abs=1e-6)
    image = next((tmp / "scenes" / "images").glob("*.jpg"))
    out = run("-m", "sat", str(image), "--weights", "hf://owner/e2e", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["words"]
    code = ("import sys; from sat.captioner import Captioner; "
            "print(Captioner.load(sys.argv[1]).caption(sys.argv[2], beam_size=2).text)")
    out = run("-c", code, "hf://owner/e2e@v2", str(image))
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    out = run("-m", "sat", str(image), "--weights", "hf://owner/e2e@nope")  # not in the cache: one line
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "hf://owner/e2e@nope" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_wrong_data_root_is_a_clear_error(tmp_path, capsys):
    code = train_main(["evaluate", "--weights", str(tmp_path / "w"), "--dataset", "karpathy",
                       "--data-root", str(tmp_path / "nothing-here")])
    assert code == 2 and "error:" in capsys.readouterr().err


@pytest.mark.slow
def test_init_from_starts_hard_attention_from_the_soft_weights(trained, capsys):
    from safetensors.torch import load_file
    tmp, common = trained
    small = ["--encoder", "test-tiny", "--image-size", "128", "--embed-dim", "16", "--attention-dim", "16",
             "--decoder-dim", "32", "--batch-size", "16", "--epochs", "1", "--max-steps", "1", "--beam-size", "1", *common]

    def fit(out, *extra):
        return train_main(["fit", "--out", str(tmp / out), "--run-dir", str(tmp / f"run-{out}"),
                           "--attention", "hard", *small, *extra])

    assert fit("warm", "--init-from", str(tmp / "weights"), "--lr", "1e-9") == 0
    assert fit("cold", "--lr", "1e-9") == 0
    soft = load_file(str(tmp / "weights" / "model.safetensors"))
    warm = load_file(str(tmp / "warm" / "model.safetensors"))
    cold = load_file(str(tmp / "cold" / "model.safetensors"))
    shared = [k for k in soft if "baseline" not in k]
    assert set(warm) - set(soft) == {"decoder.attention.baseline", "decoder.attention.baseline_set"}
    for k in shared:  # one step at lr 1e-9 leaves the soft model's values (stored in float16)
        assert torch.allclose(warm[k].float(), soft[k].float(), atol=1e-3), k
    assert max((cold[k].float() - soft[k].float()).abs().max() for k in shared) > 0.05
    assert json.loads((tmp / "warm" / "train_config.json").read_text())["init_from"] == str(tmp / "weights")
    assert "Initialised from the weights in" in (tmp / "warm" / "README.md").read_text()
    out = capsys.readouterr().out
    assert "initialised from" in out
    # the warm start says where the new model differs from its source (flags are not read from it)
    assert f"note: this model differs from {tmp / 'weights'}'s: attention 'soft' → 'hard'" in out


@pytest.mark.slow
def test_init_from_refuses_what_does_not_fit(trained, capsys):
    tmp, common = trained
    small = ["--encoder", "test-tiny", "--image-size", "128", "--embed-dim", "16", "--attention-dim", "16",
             "--decoder-dim", "32", "--batch-size", "16", "--epochs", "1", "--max-steps", "1", *common]
    fit = ["fit", "--out", str(tmp / "bad"), "--run-dir", str(tmp / "run-bad"), "--init-from", str(tmp / "weights")]
    capsys.readouterr()
    assert train_main([*fit, "--attention", "dot", *small]) == 2  # other attention tensors
    assert "decoder.attention.score" in capsys.readouterr().err
    assert train_main([*fit, *small, "--decoder-dim", "24"]) == 2  # other shapes
    assert "shape mismatches" in capsys.readouterr().err
    assert train_main([*fit, *small, "--min-freq", "3"]) == 2  # another vocabulary
    assert "vocabulary" in capsys.readouterr().err
    assert train_main(["fit", "--out", str(tmp / "bad"), "--init-from", str(tmp / "nowhere"), *small]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp / "bad").exists()  # nothing written
