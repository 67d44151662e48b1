"""Settings files for `python -m train fit`: `--config FILE` (JSON, TOML or YAML) and `--preset NAME`.

A file has up to four sections, each optional, holding the same fields as the flags (underscores,
not dashes):

    preset: flickr8k            # optional: start from a preset (train/presets.py)
    model: {embed_dim: 512, attention: soft, ...}   # ModelConfig fields (not the derived ones)
    train: {epochs: 20, lr: 4.0e-4, ...}            # TrainConfig fields
    data:  {dataset: flickr8k, data_root: data/flickr8k, ...}   # DataConfig fields
    run:   {out: my_weights, run_dir: runs/x, beam_size: 3, with_blind: false, device: auto,
            tensorboard: tb/x}

NOTE: sectioned, not flat, so a key says which config it belongs to and an unknown key is named with
its section. The action flags (--resume, --push-to-hub, --hub-*, --no-progress) are not settings:
they stay on the command line.

Precedence: built-in defaults < preset (`--preset`, else the file's `preset:`) < the file < explicit
flags. Unknown sections or keys and wrong types are one-line errors naming the file and the key.
Every fit writes its resolved settings as `run_config.yaml` (in the run folder when it starts, in
the weights folder when it ends); `--config` reads that file back to the same settings.
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from sat.atomic import write_atomic

RESOLVED_FILE = "run_config.yaml"
RUN_FIELDS: dict[str, str] = {"out": "str", "run_dir": "str?", "beam_size": "int", "with_blind": "bool",
                              "device": "str", "tensorboard": "str?"}
"""The `run` section: fit's own flags that are settings ('?': may be absent / null)."""
DERIVED = {"encoder_dim", "grid", "vocab_size", "crop_pct", "interpolation", "mean", "std"}
"""ModelConfig fields filled in from the data and the encoder (its pretrained preprocessing), not settings."""
_KINDS = ("int", "float", "bool", "str")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def parse_bool(text: str) -> bool:
    """An argparse `type` for boolean flags: true/false, 1/0, yes/no (any case); anything else is an error."""
    s = text.strip().lower()
    if s in _TRUE or s in _FALSE:
        return s in _TRUE
    raise argparse.ArgumentTypeError(f"expected true/false (or 1/0, yes/no), got {text!r}")


def schema() -> dict[str, dict[str, str]]:
    """section → field → type name ('int', 'float', 'bool', 'str', 'str?'): the fields that are flags."""
    from sat.config import ModelConfig
    from train.loop import TrainConfig
    from train.pipeline import DataConfig

    def flags(cls, skip=frozenset()) -> dict[str, str]:
        return {f.name: str(f.type) for f in fields(cls) if f.name not in skip and str(f.type) in _KINDS}
    return {"model": flags(ModelConfig, DERIVED), "train": flags(TrainConfig), "data": flags(DataConfig),
            "run": dict(RUN_FIELDS)}


def _check_value(value: Any, kind: str, where: str) -> Any:
    if kind.endswith("?") and value is None:
        return None
    kind = kind.rstrip("?")
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "str" and isinstance(value, str):
        return value
    want = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}[kind]
    raise ValueError(f"{where} must be {want}, got {value!r}")


def check_settings(d: Any, source: str) -> dict[str, dict[str, Any]]:
    """Validate {section: {field: value}} (keys and types) → a copy with floats made float."""
    if not isinstance(d, dict):
        raise ValueError(f"{source}: expected sections model/train/data/run, got {type(d).__name__}")
    sch = schema()
    unknown = [s for s in d if s not in sch]
    unknown += [f"{s}.{k}" for s, v in d.items() if s in sch and isinstance(v, dict) for k in v if k not in sch[s]]
    if unknown:
        hints = []
        for u in unknown:
            sec, _, key = u.rpartition(".")
            close = difflib.get_close_matches(key, sch[sec] if sec else sch, n=1)
            hints.append(u + (f" (did you mean {(sec + '.') if sec else ''}{close[0]}?)" if close else ""))
        derived = " (derived fields are filled in from the data and encoder)" if any(
            u.split(".")[-1] in DERIVED for u in unknown) else ""
        raise ValueError(f"{source}: unknown keys {', '.join(hints)}; sections: {', '.join(sch)}{derived}")
    out = {}
    for sec, values in d.items():
        values = {} if values is None else values  # NOTE: YAML `model:` with every key commented out
        if not isinstance(values, dict):
            raise ValueError(f"{source}: section {sec!r} must be a table of settings, got {values!r}")
        out[sec] = {k: _check_value(v, sch[sec][k], f"{source}: {sec}.{k}") for k, v in values.items()}
    return out


def preset_settings(name: str) -> dict[str, dict[str, Any]]:
    """A preset's table (train/presets.py), checked like a file and built into the configs it sets."""
    from train.presets import PRESETS
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    d = check_settings(PRESETS[name], f"preset {name}")
    _build(d, f"preset {name}")
    return d


def _build(d: dict[str, dict[str, Any]], source: str) -> None:
    """Run each config's own validation on these values (over its defaults)."""
    from sat.config import ModelConfig
    from train.loop import TrainConfig
    from train.pipeline import DataConfig
    for sec, cls in (("model", ModelConfig), ("train", TrainConfig), ("data", DataConfig)):
        try:
            cls(**d.get(sec, {}))
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None


def _yaml_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """NOTE: YAML 1.1 (PyYAML) reads `1e-3` as a string; YAML 1.2 and JSON/TOML read a number."""

    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
                                 list("-+0123456789."))
    return Loader


def read_config(path: str | Path) -> dict[str, Any]:
    """Read and check a settings file → {'preset'?: name, section: {field: value}}."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml", ".yaml", ".yml"):
        raise ValueError(f"--config {path}: expected a .json, .toml, .yaml or .yml file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--config {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        if suffix == ".json":
            d = json.loads(text)
        elif suffix == ".toml":
            import tomllib
            d = tomllib.loads(text)
        else:
            import yaml
            d = yaml.load(text, Loader=_yaml_loader())
    except Exception as e:  # NOTE: json, tomllib and yaml errors alike: one line naming the file
        raise ValueError(f"--config {path}: not valid {suffix[1:].upper()}: {' '.join(str(e).split())}") from None
    d = {} if d is None else d
    if not isinstance(d, dict):
        raise ValueError(f"--config {path}: expected sections model/train/data/run, got {type(d).__name__}")
    d = dict(d)
    preset = d.pop("preset", None)
    from train.presets import PRESETS
    if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
        raise ValueError(f"--config {path}: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    # NOTE: keys and types only: the values meet the flags and defaults before ModelConfig & co. check them
    out = check_settings(d, f"--config {path}")
    return {**({"preset": preset} if preset else {}), **out}


def fit_defaults(preset: str | None, config: Path | None) -> tuple[dict[str, Any], str | None]:
    """The argparse defaults a preset and a file give (dest → value; flags still override them),
    and the preset applied (the flag's, else the file's)."""
    file = read_config(config) if config else {}
    name = preset or file.pop("preset", None)
    layers = ([preset_settings(name)] if name else []) + [{k: v for k, v in file.items() if k != "preset"}]
    flat: dict[str, Any] = {}
    for layer in layers:
        for values in layer.values():
            flat.update({k: v for k, v in values.items() if v is not None})
    return flat, name


def resolved(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The settings a parsed `fit` runs with, as a file (None and absent paths left out)."""
    out = {}
    for sec, keys in schema().items():
        values = {k: getattr(args, k) for k in keys}
        out[sec] = {k: str(v) if isinstance(v, Path) else v for k, v in values.items() if v is not None}
    return out


def dump(settings: dict[str, dict[str, Any]], *, command: str) -> str:
    """YAML text of resolved settings, with a comment saying where they came from."""
    import yaml
    head = (f"# Resolved settings of: {command}\n"
            f"# `python -m train fit --config THIS_FILE` runs them again (flags override).\n")
    return head + yaml.safe_dump(settings, sort_keys=False, allow_unicode=True)


def write_resolved(folder: Path, settings: dict[str, dict[str, Any]], *, command: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RESOLVED_FILE
    return write_atomic(path, dump(settings, command=command))
