"""A Hugging Face Hub cache written the way huggingface_hub itself writes it (see its
`_snapshot_download.py` and `file_download.py`), so code under test resolves Hub files offline
through the real library: ``models--owner--name/blobs/<sha256>``, ``snapshots/<commit>/<file>``
symlinks into blobs, and ``refs/<branch or tag>`` holding a commit hash (no newline).
huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE when it is imported, so the code that resolves
runs in a subprocess with those variables set (`offline_env`), as a person's shell would.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sat.paths import REPO


def repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def add_snapshot(repo_dir: Path, commit: str, files: dict[str, bytes]) -> Path:
    """Store `files` (name → bytes) as commit `commit` of a cached repo; returns the snapshot folder."""
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snap), snap / name)
    return snap


def set_ref(repo_dir: Path, ref: str, commit: str) -> None:
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / ref).write_text(commit)  # NOTE: huggingface_hub reads it without strip()


def offline_env(cache: Path, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a subprocess that may use only `cache` (no token, no network)."""
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HOME": str(home),
           "PYTHONPATH": str(REPO), **extra}
    env.pop("HF_TOKEN", None)
    return env
