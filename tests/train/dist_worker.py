"""One rank of the data-parallel tests, launched by `python -m torch.distributed.run` (or plainly,
as a single process: the same code path with world size 1).

    python tests/train/dist_worker.py fit OUT_DIR [--attention soft] [--batch-size 9] [--compile] [--epochs 3]
    python tests/train/dist_worker.py features OUT_DIR IMAGES_DIR CACHE_DIR

Rank 0 saves what it ended with (weights + history, or the cache's maps + failed ids) to
OUT_DIR/result.pt; every rank saves its own weights to OUT_DIR/rank<r>.pt so the test can check
the ranks agree.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from sat.config import ModelConfig  # noqa: E402
from sat.model import CaptionModel  # noqa: E402
from train import distributed as D  # noqa: E402
from train.loop import CaptionData, TrainConfig, fit  # noqa: E402


def toy_data(n_images: int = 20) -> CaptionData:
    """Learnable toy pairs with captions of *different* lengths, so token counts differ across ranks."""
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(n_images, 8, 2, 2, generator=g) * 0.1
    cls = torch.arange(n_images) % 3
    maps[torch.arange(n_images), cls, 0, 0] += 3.0
    rows, caps = [], []
    for i in range(n_images):
        for k in range(2):
            n_words = 1 + (i + k) % 4
            words = [4 + int(cls[i])] + [7 + (k + j) % 3 for j in range(n_words - 1)]
            rows.append(i)
            caps.append([1, *words, 2] + [0] * (4 - n_words))
    return CaptionData(maps=maps.half(), rows=torch.tensor(rows), captions=torch.tensor(caps))


def run_fit(out: Path, attention: str, batch_size: int, compile: bool = False, epochs: int = 3) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(encoder="test-tiny", encoder_dim=8, grid=(2, 2), vocab_size=10, embed_dim=8,
                      attention_dim=8, decoder_dim=16, dropout=0.0, attention=attention)
    model = CaptionModel(cfg)
    scores = iter([0.1, 0.3, 0.2, 0.4])
    tc = TrainConfig(epochs=epochs, batch_size=batch_size, lr=1e-2, early_stop=0, seed=3, compile=compile)
    hist = fit(model, data=toy_data(), validate=lambda m: next(scores), out_dir=out / "run", config=tc,
               progress=False)
    ctx = D.current()
    torch.save(model.state_dict(), out / f"rank{ctx.rank}.pt")
    if ctx.is_main:
        torch.save({"state": model.state_dict(), "history": hist, "world": ctx.world}, out / "result.pt")


def run_features(out: Path, images: Path, cache_dir: Path) -> None:
    from sat.encoder import create_encoder
    from train.features import extract_features

    paths = sorted(images.iterdir())
    cache = extract_features(paths, [p.name for p in paths], encoder=create_encoder("test-tiny"), image_size=64,
                             resize="crop", dataset_root=images, cache_dir=cache_dir, batch_size=2,
                             progress=False)
    if D.current().is_main:
        torch.save({"maps": torch.from_numpy(cache.maps.copy()), "failed": cache.failed, "ids": cache.ids,
                    "path": str(cache.path)}, out / "result.pt")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["fit", "features"])
    p.add_argument("out", type=Path)
    p.add_argument("extra", nargs="*", type=Path)
    p.add_argument("--attention", default="soft")
    p.add_argument("--batch-size", type=int, default=9)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(1)
    D.init("cpu")
    try:
        a.out.mkdir(parents=True, exist_ok=True)
        if a.what == "fit":
            run_fit(a.out, a.attention, a.batch_size, a.compile, a.epochs)
        else:
            run_features(a.out, *a.extra)
    finally:
        D.shutdown()


if __name__ == "__main__":
    main()
