"""`sat.hub`: weights specs, offline resolution from a Hugging Face cache, pushing (with a fake API).

The cache is laid out as huggingface_hub itself writes it (see its `_snapshot_download.py` and
`file_download.py`): ``models--owner--name/blobs/<hash>``, ``snapshots/<commit>/<file>`` symlinks
into blobs, ``refs/<branch or tag>`` holding a commit hash (no newline), and optionally
``trees/<commit>.json``, the file listing that tells a complete snapshot from a partial one.
huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE when it is imported, so resolution runs in a
subprocess with those variables set, as a person's shell would.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sat.hub import HubError, WEIGHTS_FILES, check_repo_id, parse_hub_spec, push_to_hub, resolve_weights
from sat.paths import REPO
from sat.weights import WeightsError
from tests.conftest import make_tiny_weights
from tests.hub_cache import add_snapshot as add_files_snapshot, set_ref

MAIN, V1, PARTIAL = "a" * 40, "b" * 40, "c" * 40


def add_snapshot(repo_dir: Path, commit: str, weights: Path) -> None:
    """Store a weights folder as commit ``commit`` of a cached repo (blobs + symlinked snapshot)."""
    add_files_snapshot(repo_dir, commit, {name: (weights / name).read_bytes() for name in WEIGHTS_FILES
                                           if (weights / name).is_file()})


@pytest.fixture
def hf_cache(tmp_path) -> Path:
    cache = tmp_path / "hub"
    repo_dir = cache / "models--owner--sat-soft"
    for commit, seed, bleu in ((MAIN, 0, 0.25), (V1, 1, 0.15)):
        w = make_tiny_weights(tmp_path / f"w{seed}", seed=seed)
        (w / "metrics.json").write_text(json.dumps({"bleu4": bleu, "dataset": "scenes"}))
        add_snapshot(repo_dir, commit, w)
    set_ref(repo_dir, "main", MAIN)
    set_ref(repo_dir, "v1", V1)
    # A snapshot whose cached file listing names a file that never arrived: incomplete.
    partial = repo_dir / "snapshots" / PARTIAL
    partial.mkdir()
    (partial / "config.json").symlink_to(next((repo_dir / "snapshots" / MAIN).glob("config.json")).resolve())
    set_ref(repo_dir, "partial", PARTIAL)
    listing = {n: {"size": 1, "blob_id": "0" * 40} for n in ("config.json", "model.safetensors")}
    (repo_dir / "trees").mkdir()
    (repo_dir / "trees" / f"{PARTIAL}.json").write_text(json.dumps({"format_version": 1, "files": listing}))
    return cache


RESOLVE = """
import json, sys
from sat.hub import resolve_weights
from sat.captioner import Captioner
from sat.weights import WeightsError
out = {}
for spec in sys.argv[1:]:
    try:
        path = resolve_weights(spec)
        cap = Captioner.load(path)
        out[spec] = {"path": str(path), "bleu4": cap.metrics["bleu4"], "dataset": cap.metrics["dataset"]}
    except WeightsError as e:
        out[spec] = {"error": str(e)}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_resolves_branches_tags_and_commits_offline(hf_cache, tmp_path):
    specs = ["hf://owner/sat-soft", "hf://owner/sat-soft@v1", f"hf://owner/sat-soft@{V1}",
             "hf://owner/sat-soft@nope", "hf://owner/elsewhere", "hf://owner/sat-soft@partial"]
    env = {**os.environ, "HF_HUB_CACHE": str(hf_cache), "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": str(REPO)}
    env.pop("HF_TOKEN", None)
    proc = subprocess.run([sys.executable, "-c", RESOLVE, *specs], env=env, capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    snaps = hf_cache / "models--owner--sat-soft" / "snapshots"
    assert got["hf://owner/sat-soft"] == {"path": str(snaps / MAIN), "bleu4": 0.25, "dataset": "scenes"}
    assert got["hf://owner/sat-soft@v1"]["path"] == str(snaps / V1)
    assert got["hf://owner/sat-soft@v1"]["bleu4"] == 0.15
    assert got[f"hf://owner/sat-soft@{V1}"]["path"] == str(snaps / V1)
    for spec in ("hf://owner/sat-soft@nope", "hf://owner/elsewhere"):
        err = got[spec]["error"]
        assert "not in the local cache and HF_HUB_OFFLINE is set" in err and spec in err
    assert "incomplete" in got["hf://owner/sat-soft@partial"]["error"]
    assert "model.safetensors" in got["hf://owner/sat-soft@partial"]["error"]


@pytest.mark.parametrize("spec, expected", [
    ("hf://owner/repo", ("owner/repo", None)),
    ("hf://owner/repo@v1.0", ("owner/repo", "v1.0")),
    ("hf://Org-1/my_model.v2@refs/pr/3", ("Org-1/my_model.v2", "refs/pr/3")),
])
def test_parse_hub_spec(spec, expected):
    assert parse_hub_spec(spec) == expected


@pytest.mark.parametrize("spec", ["hf://owner", "hf://owner/repo@", "hf://a/b/c", "hf://own er/repo",
                                  "hf://owner/re--po", "hf:///repo"])
def test_bad_hub_specs_are_weights_errors(spec):
    with pytest.raises(WeightsError, match="expected owner/name|empty revision"):
        parse_hub_spec(spec)


def test_local_folders_resolve_as_given(tmp_path):
    w = make_tiny_weights(tmp_path / "w")
    assert resolve_weights(str(w)) == w and resolve_weights(w) == w
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights(tmp_path / "missing")


class FakeApi:
    """Records what push_to_hub asks of the Hub."""
    calls: list[tuple] = []

    def __init__(self, token=None):
        self.calls.append(("init", token))

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def create_branch(self, repo_id, **kw):
        self.calls.append(("create_branch", repo_id, kw))

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw))
        if kw["repo_id"] == "owner/forbidden":
            raise OSError("403 Forbidden")
        return type("CommitInfo", (), {"commit_url": f"https://hub.example/{kw['repo_id']}/commit/1"})()


def test_push_to_hub_uploads_only_the_weights_files(tmp_path, monkeypatch):
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    FakeApi.calls = []
    w = make_tiny_weights(tmp_path / "w")
    url = push_to_hub(w, "owner/sat-soft", revision="exp", private=True, token="t0k")
    assert url == "https://hub.example/owner/sat-soft/commit/1"
    kinds = [c[0] for c in FakeApi.calls]
    assert kinds == ["init", "create_repo", "create_branch", "upload_folder"]
    assert FakeApi.calls[0] == ("init", "t0k")
    assert FakeApi.calls[1][2]["private"] is True and FakeApi.calls[1][2]["exist_ok"] is True
    upload = FakeApi.calls[3][1]
    assert upload["folder_path"] == str(w) and upload["revision"] == "exp"
    assert upload["allow_patterns"] == WEIGHTS_FILES and "soft attention" in upload["commit_message"]
    FakeApi.calls = []
    push_to_hub(w, "owner/sat-soft")
    assert [c[0] for c in FakeApi.calls] == ["init", "create_repo", "upload_folder"]  # main: no branch
    with pytest.raises(HubError, match="403 Forbidden"):
        push_to_hub(w, "owner/forbidden")


def test_push_to_hub_refuses_broken_folders_before_any_network(tmp_path, monkeypatch):
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    FakeApi.calls = []
    (tmp_path / "w").mkdir()
    with pytest.raises(WeightsError, match="no model.safetensors"):
        push_to_hub(tmp_path / "w", "owner/sat-soft")
    with pytest.raises(ValueError, match="not a Hub repository id"):
        push_to_hub(tmp_path / "w", "no-owner")
    assert FakeApi.calls == []
    assert check_repo_id("a/b") == "a/b"


def test_train_fit_pushes_after_writing_weights(tmp_path, monkeypatch):
    import sat.hub
    import train.__main__ as cli

    order: list[str] = []

    def fake_fit(*args, out, **kwargs):
        order.append("fit")
        make_tiny_weights(out)

    def fake_push(folder, repo_id, **kw):
        order.append("push")
        assert (Path(folder) / "model.safetensors").is_file()
        pushed.update(folder=Path(folder), repo_id=repo_id, **kw)
        return "https://hub.example/commit"

    pushed: dict = {}
    monkeypatch.setattr(cli, "run_fit", fake_fit)
    monkeypatch.setattr(sat.hub, "push_to_hub", fake_push)
    out = tmp_path / "weights"
    assert cli.main(["fit", "--out", str(out), "--push-to-hub", "owner/sat-x", "--hub-private"]) == 0
    assert order == ["fit", "push"]
    assert pushed == {"folder": out, "repo_id": "owner/sat-x", "revision": None, "private": True}
    order.clear()
    assert cli.main(["fit", "--out", str(out), "--push-to-hub", "not a repo"]) == 2
    assert order == []  # refused before training


@pytest.mark.slow
def test_init_from_takes_a_hub_spec(hf_cache, tmp_path):
    code = ("import sys; from train.variants import resolve_init; "
            "print(resolve_init(sys.argv[1])); print(resolve_init(sys.argv[2]))")
    env = {**os.environ, "HF_HUB_CACHE": str(hf_cache), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code, "hf://owner/sat-soft@v1", str(tmp_path / "w0")], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    hub, local = out.stdout.split()
    assert Path(hub).name == V1 and (Path(hub) / "model.safetensors").is_file()
    assert Path(local) == tmp_path / "w0"
