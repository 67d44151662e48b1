"""sat.atomic (the one atomic writer), sat.device (the one device resolver), sat.paths (the one REPO)."""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from sat.atomic import replacing, write_atomic, write_json
from sat.device import resolve_device
from sat.paths import EXAMPLES, REPO, WEIGHTS


def test_write_json_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    assert write_json(path, {"é": [1, 2]}, ensure_ascii=False) == path
    assert path.read_text(encoding="utf-8") == '{"é": [1, 2]}\n'
    assert json.loads(path.read_text(encoding="utf-8")) == {"é": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_previous_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "best.pt"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="disk full"):
        with replacing(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_an_unwritable_folder_is_a_one_line_oserror_naming_the_path(tmp_path):
    missing = tmp_path / "no" / "such" / "folder" / "x.txt"
    with pytest.raises(OSError) as e:
        write_atomic(missing, "text")
    assert str(missing) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_the_mode_is_the_umask_one_even_when_the_writer_changes_it(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with replacing(tmp_path / "w.bin") as tmp:
            tmp.write_bytes(b"x")
            os.chmod(tmp, 0o600 if mode != 0o600 else 0o644)  # what safetensors' writer does
        write_atomic(tmp_path / "t.txt", "y")
    finally:
        os.umask(old)
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {mode}


def test_resolve_device_auto_and_unknown_names():
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto") == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^unknown device 'tpu': use cpu or cuda\[:N\]$"):
        resolve_device("tpu")


def test_resolve_device_without_cuda_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^CUDA was requested but torch.cuda.is_available\(\) is False$"):
        resolve_device("cuda:0")


def test_paths_point_into_this_repository():
    assert (REPO / "app.py").is_file() and (REPO / "sat" / "paths.py").is_file()
    assert (WEIGHTS / "soft" / "config.json").is_file() and any(EXAMPLES.glob("*.jpg"))
