"""Checkpoints of the training loop: written atomically, read back with one-line errors, and
compared with the settings of the run that resumes them.

    save_atomic(obj, out / "best.pt")            # sat.atomic: tmp file in the same folder + os.replace
    ck = load_checkpoint(out / "last.pt", device) # ValueError (one line) when truncated or foreign
    check_model(ck, model, path)                  # ValueError naming the tensor / settings that differ
    config, warning = resumed_config(ck, config)  # which changed settings take effect

What a resumed run does with a changed setting: the learning rates, the
plateau schedule, batch size, epochs, stopping, clipping, the regulariser, the caption draw and
bf16 take effect from the next step; the seed and `init_from` cannot (`KEPT`: the checkpoint's
random state and weights continue) and keep the checkpoint's values. The model must be the checkpoint's:
any other model setting is an error, except dropout (no tensor depends on it), which takes effect.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import torch

from sat.atomic import replacing

RESUME_HINT = "delete it or run without --resume"
KEPT = {"seed": "the checkpoint's random state continues",
        "init_from": "the weights come from the checkpoint"}
"""Training settings a resumed run cannot change, and why (the checkpoint's values are kept)."""
MODEL_CAN_CHANGE = {"dropout"}
"""Model settings that may differ on resume: no tensor shape or meaning depends on them."""
REQUIRED = ("model", "optimizer", "scheduler", "shuffle_rng", "torch_rng", "epoch", "best", "bad_epochs",
            "steps", "history")


def one_line(e: BaseException, limit: int = 200) -> str:
    """An exception as one short line (torch's and zipfile's messages span many lines)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor in a (nested) checkpoint: about its size on disk."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def save_atomic(obj: Any, path: str | Path) -> None:
    """`torch.save` to a temporary file beside `path`, then `os.replace` (`sat.atomic.replacing`): a
    crash or a full disk mid-write leaves the previous file intact. A failed write raises a one-line
    OSError naming the path and the space it needs."""
    path = Path(path)
    try:
        with replacing(path) as tmp:
            torch.save(obj, tmp)
    except (OSError, RuntimeError) as e:  # NOTE: torch's zip writer reports ENOSPC as RuntimeError
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**20:,.0f} MB free there"
        except OSError:
            free = "free space unknown"
        raise OSError(f"could not write {path} (needs about {tensor_bytes(obj) / 2**20:,.1f} MB, {free}): "
                      f"{one_line(e)}") from None


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a `last.pt` this trainer wrote; a truncated, corrupt or foreign file is a one-line ValueError."""
    path = Path(path)
    try:
        # NOTE: our own checkpoint, still loaded with weights_only=True (tensors and plain data only)
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 — zip, pickle, EOF and torch errors alike: the file is unusable
        raise ValueError(f"{path} is not a readable checkpoint ({one_line(e)}); {RESUME_HINT}") from None
    missing = [k for k in REQUIRED if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise ValueError(f"{path} is not a checkpoint of this trainer (no {', '.join(missing)}); {RESUME_HINT}")
    return ck


def _changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (old[k], new[k]) for k in new if k in old and _plain(old[k]) != _plain(new[k])}


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _describe(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {a!r} → {b!r}" for k, (a, b) in changes.items())


def check_model(ck: dict[str, Any], model: torch.nn.Module, path: str | Path) -> dict[str, tuple[Any, Any]]:
    """The checkpoint's model must be this one: same settings (but dropout) and tensor shapes.

    Returns the model settings that changed and may (`MODEL_CAN_CHANGE`), for the warning."""
    old_cfg = ck.get("model_config")
    changed = _changes(old_cfg, model.config.to_dict()) if old_cfg and hasattr(model, "config") else {}
    fatal = {k: v for k, v in changed.items() if k not in MODEL_CAN_CHANGE}
    if fatal:
        raise ValueError(f"{path} holds another model ({_describe(fatal)}); {RESUME_HINT}")
    saved, own = ck["model"], model.state_dict()
    for name, t in own.items():
        if name not in saved:
            raise ValueError(f"{path} holds another model (no tensor {name}); {RESUME_HINT}")
        if tuple(saved[name].shape) != tuple(t.shape):
            raise ValueError(f"{path} holds another model: tensor {name} is {tuple(saved[name].shape)} "
                             f"there, {tuple(t.shape)} here; {RESUME_HINT}")
    extra = sorted(set(saved) - set(own))
    if extra:
        raise ValueError(f"{path} holds another model (extra tensor {extra[0]}); {RESUME_HINT}")
    return changed


def resumed_config(ck: dict[str, Any], config: Any,
                   model_changes: dict[str, tuple[Any, Any]] | None = None) -> tuple[Any, str]:
    """(the config the resumed run uses, a one-line warning naming every changed setting, or "").

    `model_changes`: what `check_model` returned (named in the same warning)."""
    old = ck.get("train_config") or {}
    changed = _changes(old, dataclasses.asdict(config))
    parts = [f"{k} {a!r} → {b!r}" + (f" (ignored: {KEPT[k]})" if k in KEPT else "")
             for k, (a, b) in changed.items()]
    parts += [f"model {k} {a!r} → {b!r}" for k, (a, b) in (model_changes or {}).items()]
    kept = {k: old[k] for k in changed if k in KEPT}
    warning = "warning: resuming with changed settings: " + ", ".join(parts) if parts else ""
    return dataclasses.replace(config, **kept), warning


def apply_settings(ck: dict[str, Any], config: Any, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """After loading their states: changed learning rates and plateau settings take effect.

    NOTE: the optimizer's state dict carries the learning rates in use (decayed on plateau); they
    are only overwritten when the setting itself changed, so a plain resume continues the decay."""
    old = ck.get("train_config") or {}
    for group, key in zip(optimizer.param_groups, ("lr", "encoder_lr")):
        if key in old and old[key] != getattr(config, key):
            group["lr"] = getattr(config, key)
    scheduler.factor, scheduler.patience = config.lr_factor, config.lr_patience
