"""Weights on the Hugging Face Hub: resolve ``hf://owner/repo[@revision]`` specs, push folders.

    resolve_weights("assets/weights/soft")          # a local folder: returned as a Path
    resolve_weights("hf://owner/sat-soft")          # the snapshot of main in the standard HF cache
    resolve_weights("hf://owner/sat-soft@v1.0")     # a branch, a tag or a full commit hash
    push_to_hub("my_weights", "owner/sat-soft")     # create the repo if needed, upload the folder

Resolution goes through `huggingface_hub.snapshot_download`, so it uses the standard cache
(``HF_HOME`` / ``HF_HUB_CACHE``) and honours ``HF_HUB_OFFLINE=1``: offline, a revision is looked
up in the cache's ``refs/`` (branch or tag) or taken as a commit hash under ``snapshots/``.
Every failure becomes a `WeightsError` whose message says what to do, never a library traceback.
`huggingface_hub` is imported only when a Hub spec is used, so local folders need nothing of it.
"""
from __future__ import annotations

import re
from pathlib import Path

from .ood import INFO_FILE as OOD_INFO_FILE, STATS_FILE as OOD_STATS_FILE
from .weights import CARD_FILE, CONFIG_FILE, METRICS_FILE, VOCAB_FILE, WEIGHTS_FILE, WeightsError, read_weights

HF_SCHEME = "hf://"
WEIGHTS_FILES = [WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE, METRICS_FILE, CARD_FILE, OOD_STATS_FILE, OOD_INFO_FILE]
"""The files of a weights folder (sat/weights.py); nothing else is downloaded or uploaded."""
# NOTE: the Hub's own rule for repo names: letters, digits, '-', '_', '.'; no '--' or '..'; ≤ 96 chars.
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")


class HubError(OSError):
    """Talking to the Hub failed (network, auth, permissions); the message says which."""


def is_hub_spec(spec: str | Path) -> bool:
    return isinstance(spec, str) and spec.startswith(HF_SCHEME)


def check_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it looks like ``owner/name``, else raise ValueError saying why."""
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id:
        raise ValueError(f"{repo_id!r} is not a Hub repository id: expected owner/name "
                         "(letters, digits, '-', '_', '.')")
    return repo_id


def parse_hub_spec(spec: str) -> tuple[str, str | None]:
    """``hf://owner/repo[@revision]`` → (repo_id, revision or None). Raises WeightsError."""
    if not is_hub_spec(spec):
        raise WeightsError(f"{spec!r} is not a Hub spec (expected {HF_SCHEME}owner/repo[@revision])")
    body = spec[len(HF_SCHEME):]
    repo_id, sep, revision = body.partition("@")
    if sep and not revision:
        raise WeightsError(f"{spec!r}: empty revision after '@'")
    try:
        check_repo_id(repo_id)
    except ValueError as e:
        raise WeightsError(f"{spec!r}: {e}") from None
    return repo_id, (revision or None)


def resolve_weights(spec: str | Path) -> Path:
    """A weights spec → a local folder: a path as given, or a Hub snapshot (downloaded or cached).

    The folder's contents are checked later by `Captioner.load`; here a local path only has to
    exist and a Hub spec has to resolve.
    """
    if not is_hub_spec(spec):
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise WeightsError(f"weights folder {path} does not exist (give a folder or "
                               f"{HF_SCHEME}owner/repo[@revision])")
        return path
    repo_id, revision = parse_hub_spec(str(spec))
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (HfHubHTTPError, IncompleteSnapshotError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = f"{spec} (cache {constants.HF_HUB_CACHE})"
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=WEIGHTS_FILES)
    except RevisionNotFoundError:
        raise WeightsError(f"{where}: the repository has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise WeightsError(f"{where}: no such repository, or it is private and no token was "
                           "given (set HF_TOKEN or run `hf auth login`)") from None
    except IncompleteSnapshotError as e:
        raise WeightsError(f"{where}: the cached snapshot is incomplete ({e})") from None
    except LocalEntryNotFoundError:
        # NOTE: raised offline (HF_HUB_OFFLINE=1, or no network) when the cache lacks the revision.
        mode = "HF_HUB_OFFLINE is set" if constants.is_offline_mode() else "the Hub cannot be reached"
        raise WeightsError(f"{where}: not in the local cache and {mode}; download it once online "
                           f"or give a local folder") from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise WeightsError(f"{where}: {type(e).__name__}: {e}") from None
    return Path(folder)


def push_to_hub(folder: str | Path, repo_id: str, *, revision: str | None = None,
                private: bool = False, token: str | None = None) -> str:
    """Upload a weights folder to a Hub model repository (created if missing); returns the commit URL.

    The folder is validated first (`read_weights`), so a broken folder is never published. Only
    the weights folder's own files are uploaded. ``revision`` is a branch, created from main when
    it does not exist. The token defaults to huggingface_hub's (HF_TOKEN or `hf auth login`).
    """
    folder = Path(folder)
    check_repo_id(repo_id)
    _, config, vocab, metrics = read_weights(folder)  # raises WeightsError naming the problem
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    dataset = metrics.get("dataset", "unknown data")
    message = (f"SAT Studio weights: {config.attention} attention, {config.decoder} decoder, "
               f"{config.encoder}, trained on {dataset} ({len(vocab)} tokens)")
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                                 repo_type="model", commit_message=message,
                                 allow_patterns=WEIGHTS_FILES)
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise HubError(f"pushing {folder} to {repo_id} failed: {type(e).__name__}: {e}") from None
    return str(getattr(info, "commit_url", info))
