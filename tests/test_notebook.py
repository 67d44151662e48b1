"""notebooks/train_photos.ipynb runs end to end (nbclient, the `python3` kernel) on a tiny Flickr8k copy.

The parameters cell is overridden the way papermill does it (a cell injected right after the one tagged
`parameters`): no download, no install, no GPU, the tiny test encoder and model, one short epoch, no
push, no hard-attention warm start (it would double the training and scoring time) and the app built
but not served. Everything else runs as a user would run it: the settings file, `fit --extract-only`,
`fit`, `evaluate`, the attention grids, the app factory.
"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from sat.captioner import Captioner
from sat.paths import REPO
from tests.train.conftest import write_flickr8k
from train.metrics import METRIC_KEYS

NOTEBOOK = REPO / "notebooks" / "train_photos.ipynb"
TINY_SETTINGS = {"model": {"encoder": "test-tiny", "image_size": 64, "embed_dim": 8, "attention_dim": 8,
                           "decoder_dim": 16},
                 "train": {"batch_size": 8},
                 "data": {"min_freq": 1, "val_images": 4}}


def write_karpathy_flickr8k(root: Path, info: dict) -> Path:
    """Karpathy's dataset_flickr8k.json for the fixture: his layout, the fixture's official splits."""
    split_of = {name: ("val" if split == "dev" else split) for split, names in info["splits"].items() for name in names}
    images = [{"filename": name, "imgid": i, "split": split_of[name], "sentids": [],
               "sentences": [{"raw": "a picture", "tokens": ["a", "picture"], "imgid": i, "sentid": 0}]}
              for i, name in enumerate(info["names"])]
    path = root / "dataset_flickr8k.json"
    path.write_text(json.dumps({"dataset": "flickr8k", "images": images}), encoding="utf-8")
    return path


def parametrised(params: dict) -> nbformat.NotebookNode:
    """The notebook with `params` injected after its `parameters` cell (papermill's rule)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    return nb


def text_of(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def images_of(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def cell_running(nb, needle: str):
    return next(c for c in nb.cells if c.cell_type == "code" and needle in c.source)


def test_the_notebook_has_one_parameters_cell_with_every_knob() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    names = {line.split("=")[0].strip() for line in params.source.splitlines() if "=" in line and not line.startswith("#")}
    assert {"REPO_URL", "REPO_DIR", "INSTALL", "DATASET", "DATA_ROOT", "DOWNLOAD", "EPOCHS", "MAX_STEPS",
            "SETTINGS", "PUSH_REPO", "START_APP", "SHARE"} <= names
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"


@pytest.mark.slow
def test_notebook_trains_evaluates_and_builds_the_app(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "f8k"
    info = write_flickr8k(data, n=10)
    write_karpathy_flickr8k(data, info)
    out, hard, runs = tmp_path / "w" / "soft", tmp_path / "w" / "hard", tmp_path / "runs"
    nb = parametrised({
        "REPO_DIR": str(REPO), "INSTALL": False, "REQUIRE_GPU": False,
        "DATASET": "flickr8k", "DATA_ROOT": str(data), "DOWNLOAD": False, "CACHE_DIR": str(tmp_path / "cache"),
        "RUNS": str(runs), "OUT": str(out), "HARD_OUT": str(hard), "EPOCHS": 1, "MAX_STEPS": 3,
        "SETTINGS": TINY_SETTINGS, "TRAIN_HARD": False, "BEAM_SIZE": 2, "N_GRIDS": 2,
        "PUSH_REPO": "", "START_APP": False,
    })
    # NOTE: the kernel and its subprocesses inherit this environment: no network, one thread each
    for key, value in {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1",
                       "PYTHONWARNINGS": "ignore"}.items():
        monkeypatch.setenv(key, value)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    # the weights load with the library and are what the settings asked for
    soft = Captioner.load(out)
    assert soft.config.encoder == "test-tiny" and soft.config.decoder_dim == 16 and soft.config.attention == "soft"
    assert (out / "run_config.yaml").is_file() and (runs / "photos.yaml").is_file()
    # features were extracted by their own step, and fit reused them
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 1
    assert "features: 10 images × 16×2×2 float16" in text_of(cell_running(nb, "--extract-only"))
    # `evaluate` scored the 2 test images with the official metrics and reproduced fit's own test scores
    report = json.loads((runs / "photos_soft_test.json").read_text())
    fitted = json.loads((out / "metrics.json").read_text())
    assert report["n_images"] == 2 and report["beam_size"] == 2
    assert {k: report[k] for k in METRIC_KEYS} == pytest.approx({k: fitted[k] for k in METRIC_KEYS}, abs=1e-6)
    assert not (runs / "photos_hard_test.json").exists() and not hard.exists()
    table = text_of(cell_running(nb, "PAPER_SCORES[DATASET]"))
    assert "paper, soft attention" in table and "19.50" in table and "18.93" in table
    # the loss curve and one attention grid per test image, shown inline
    assert images_of(cell_running(nb, "loss.png")) == 1
    assert sorted(p.name for p in (runs / "photos_grids").iterdir()) == ["photo_1.png", "photo_2.png"]
    assert images_of(cell_running(nb, "--attention-png")) == 2
    # the app was built on the new weights (not served: START_APP is off)
    app = text_of(cell_running(nb, "create_app("))
    assert f"{out} — loaded" in app and "NOT loaded: no weights folder given" in app
