"""Is this image like the training images? A Mahalanobis distance on pooled encoder features.

At training time (or later, `python -m train ood-stats`) the weights folder gets the statistics of
the training images' encoder-trunk maps, spatially averaged (one D-vector per image):

    weights/
      ood.safetensors   mean (D,), components (k, D), variances (k,)   float32, ≈ 50 KB for D = 112
      ood.json          threshold, residual variance, what was fitted on, the measured flag rates

The distance is the Mahalanobis distance under a Gaussian fitted to the training vectors, kept as
its top-k principal axes (k = min(D, MAX_RANK)) plus one isotropic variance for the rest, so a wide
backbone (D = 1280) still stores KB, not MB. The threshold is the distance exceeded by at most
TARGET_FLAG_RATE of the model's *own test split* (images it never trained on, from the same
distribution): an image further than that is flagged as unlike the training data.

Nothing is pickled; the files are validated before anything is allocated (JSON types, header
shapes/dtypes against D) and after loading (finite values, positive variances). `load_stats` raises
`OODError` with one line; `Captioner.load` keeps that line and captions without the check.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .atomic import replacing, write_json

STATS_FILE = "ood.safetensors"
INFO_FILE = "ood.json"
FORMAT = "sat-ood/1"
MAX_RANK = 128
"""Principal axes kept: all of them up to D = 128 (the bundled stride-16 map has D = 112)."""
TARGET_FLAG_RATE = 0.01
"""At most this fraction of the model's own test images is flagged (the threshold's quantile)."""
VARIANCE_FLOOR = 1e-4
"""Each axis' variance is at least this times the mean variance. NOTE: a direction the training
images never vary along would otherwise give any tiny difference an enormous distance."""
SHAPES = {"mean": lambda d, k: (d,), "components": lambda d, k: (k, d), "variances": lambda d, k: (k,)}


class OODError(ValueError):
    """Statistics that cannot be used; the one-line message names the file and the problem."""


def pool(fmap: torch.Tensor) -> torch.Tensor:
    """Trunk feature maps (B, C, h, w) → one float32 vector per image (B, C): the spatial mean."""
    return fmap.float().mean(dim=(2, 3))


@dataclass
class OODStats:
    mean: torch.Tensor
    """(D,) mean of the training images' pooled features."""
    components: torch.Tensor
    """(k, D) orthonormal principal axes of their covariance, largest variance first."""
    variances: torch.Tensor
    """(k,) variance along each axis (floored at VARIANCE_FLOOR × their mean)."""
    residual_var: float
    """Variance per dimension of what the k axes leave out (0 when k = D)."""
    threshold: float
    """Distances above this are flagged: ≤ TARGET_FLAG_RATE of the own test split is."""
    info: dict[str, Any]
    """What the statistics were fitted on and the measured rates (ood.json's other fields)."""

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def distance(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled features → (B,) Mahalanobis distances (float32)."""
        x = pooled.float().to(self.mean.device) - self.mean  # (B, D)
        z = x @ self.components.T  # (B, k)
        d2 = (z.square() / self.variances).sum(1)
        if self.residual_var > 0:
            rest = (x.square().sum(1) - z.square().sum(1)).clamp_min(0)
            d2 = d2 + rest / self.residual_var
        return d2.sqrt()

    def to(self, device: torch.device | str) -> "OODStats":
        self.mean, self.components, self.variances = (t.to(device) for t in
                                                      (self.mean, self.components, self.variances))
        return self

    # ------------------------------------------------------------------ fitting and saving
    @classmethod
    def fit(cls, train: torch.Tensor, test: torch.Tensor, *, rank: int = MAX_RANK,
            info: dict[str, Any] | None = None) -> "OODStats":
        """Fit on pooled training features (N, D); set the threshold on the test split's (M, D)."""
        if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
            raise ValueError(f"pooled features must be (N, D) and (M, D), got {tuple(train.shape)} "
                             f"and {tuple(test.shape)}")
        n, d = train.shape
        if n < 2 or len(test) < 1:
            raise ValueError(f"need at least 2 training and 1 test images, got {n} and {len(test)}")
        x = train.double()
        mean = x.mean(0)
        cov = (x - mean).T @ (x - mean) / (n - 1)  # (D, D)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
        k = min(rank, d)
        floor = VARIANCE_FLOOR * max(float(evals.mean()), 1e-12)
        variances = evals[:k].clamp_min(floor)
        residual = float(evals[k:].sum() / (d - k)) if k < d else 0.0
        stats = cls(mean.float(), evecs[:, :k].T.contiguous().float(), variances.float(),
                    max(residual, floor) if k < d else 0.0, math.inf, dict(info or {}))
        test_d = stats.distance(test).double().numpy()
        train_d = stats.distance(train).double().numpy()
        # NOTE: the (1 - rate) quantile, rounded up to an observed distance: strictly more than it
        # is at most rate × M images.
        stats.threshold = float(np.quantile(test_d, 1 - TARGET_FLAG_RATE, method="higher"))
        stats.info.update({
            "n_train": int(n), "n_test": int(len(test)), "rank": int(k), "dim": int(d),
            "target_flag_rate": TARGET_FLAG_RATE,
            "test_flagged": float((test_d > stats.threshold).mean()),
            "train_flagged": float((train_d > stats.threshold).mean()),
            "test_distance_median": float(np.median(test_d)),
        })
        return stats

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        tensors = {"mean": self.mean, "components": self.components, "variances": self.variances}
        with replacing(folder / STATS_FILE) as tmp:
            save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                      metadata={"format": FORMAT})
        write_json(folder / INFO_FILE, {"format": FORMAT, "method": "mahalanobis-pca",
                                        "pooling": "spatial mean of the encoder trunk map",
                                        "threshold": self.threshold, "residual_var": self.residual_var,
                                        **self.info}, indent=2)
        return folder / STATS_FILE


def load_stats(folder: str | Path, *, dim: int) -> OODStats:
    """Read and validate a weights folder's statistics for trunk features of width `dim`.

    Raises OODError (one line) when a file is missing, malformed, of the wrong shape or non-finite.
    """
    folder = Path(folder)
    info_path, wfile = folder / INFO_FILE, folder / STATS_FILE
    for p in (info_path, wfile):
        if not p.is_file():
            raise OODError(f"{folder} has no {p.name} (compute it: python -m train ood-stats --weights {folder})")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OODError(f"{info_path}: not valid JSON ({e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise OODError(f"{info_path}: not a {FORMAT} file")
    threshold, residual = info.get("threshold"), info.get("residual_var")
    for key, v in (("threshold", threshold), ("residual_var", residual)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise OODError(f"{info_path}: {key} must be a finite number ≥ 0, got {v!r}")
    if info.get("dim") != dim:
        raise OODError(f"{info_path}: fitted on {info.get('dim')}-dim features, the encoder gives {dim}")
    # NOTE: shapes from the header first: a tampered file never makes us allocate its sizes
    try:
        with safe_open(str(wfile), framework="pt") as f:
            header = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise OODError(f"{wfile} is not a valid safetensors file ({e})") from None
    if set(header) != set(SHAPES):
        raise OODError(f"{wfile}: expected tensors {sorted(SHAPES)}, found {sorted(header)}")
    k = header["variances"][1][0] if len(header["variances"][1]) == 1 else -1
    if not 1 <= k <= dim:
        raise OODError(f"{wfile}: variances has shape {header['variances'][1]}, expected (k,) with 1 ≤ k ≤ {dim}")
    bad = [f"{n} {s} (expected {SHAPES[n](dim, k)})" for n, (_, s) in header.items() if s != SHAPES[n](dim, k)]
    bad += [f"{n} is {t}, not F32" for n, (t, _) in header.items() if t != "F32"]
    if bad:
        raise OODError(f"{wfile}: " + "; ".join(bad))
    t = load_file(str(wfile))
    nonfinite = sorted(n for n, v in t.items() if not bool(torch.isfinite(v).all()))
    if nonfinite:
        raise OODError(f"{wfile}: non-finite values (NaN or Inf) in {', '.join(nonfinite)}")
    if not bool((t["variances"] > 0).all()) or (k < dim and residual <= 0):
        raise OODError(f"{wfile}: variances must be > 0")
    rest = {k2: v for k2, v in info.items() if k2 not in ("format", "method", "pooling", "threshold", "residual_var")}
    return OODStats(t["mean"], t["components"], t["variances"], float(residual), float(threshold), rest)


@dataclass
class OODResult:
    distance: float
    """Mahalanobis distance of the image's pooled features from the training images'."""
    threshold: float
    flagged: bool
    """distance > threshold: unlike the training images."""
    dataset: str = ""
    """What the model was trained on (ood.json's dataset), for the notice."""


def check_images(stats: OODStats, fmap: torch.Tensor, *, dataset: str = "") -> list[OODResult]:
    """One result per image of trunk maps (B, C, h, w)."""
    dist = stats.distance(pool(fmap)).cpu().tolist()
    return [OODResult(round(d, 3), round(stats.threshold, 3), d > stats.threshold,
                      dataset or str(stats.info.get("dataset", ""))) for d in dist]
