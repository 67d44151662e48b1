"""Decoding cost is bounded for every format: small files that decode to huge images (issue 16, item 8)."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from sat.image import MAX_DECODE_PIXELS, MAX_DECODE_SIDE, ImageError, load_image
from sat.paths import REPO


def png_1bit(w: int, h: int) -> bytes:
    """A valid all-black 1-bit PNG of w×h: a few KB on disk however many pixels it has."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\0" * (1 + (w + 7) // 8)  # filter byte + packed pixels
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * h, 9)) + chunk(b"IEND", b""))


# NOTE: measured in a fresh process: VmHWM − VmRSS before the call is what this one decode cost.
PROBE = """
import json, sys, time
from sat.image import ImageError, load_image, preprocess
def kb(key): return int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1])
rss, t0 = kb('VmRSS'), time.perf_counter()
try:
    out = list(load_image(sys.argv[1]).size)
except ImageError as e:
    out = str(e)
print(json.dumps({"out": out, "s": time.perf_counter() - t0, "extra_mb": (kb('VmHWM') - rss) / 1024}))
"""


def probe(path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, str(path)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_small_png_of_144_megapixels_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb_1bit.png"
    path.write_bytes(png_1bit(12000, 12000))
    assert path.stat().st_size < 50_000
    r = probe(path)
    assert isinstance(r["out"], str) and "too many pixels" in r["out"] and "12000×12000" in r["out"], r
    assert r["extra_mb"] < 50 and r["s"] < 2.0, r  # was ≈ +825 MB and 2–12 s (decoded in full)


@pytest.mark.slow
def test_a_big_image_under_the_limit_is_reduced_right_after_decoding(tmp_path):
    path = tmp_path / "big_1bit.png"
    path.write_bytes(png_1bit(9000, 4000))  # 36 MP, under MAX_DECODE_PIXELS
    assert 9000 * 4000 <= MAX_DECODE_PIXELS
    r = probe(path)
    assert r["out"] == [3000, 1334], r  # box-reduced by 3 so the long side is ≤ MAX_DECODE_SIDE
    assert r["extra_mb"] < 150, r


def test_pixel_limit_counts_after_the_jpeg_draft(tmp_path):
    # a 3:1 JPEG over the limit in the header, within it after the draft (6000×2000), then box-reduced
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (12000, 4000), (20, 120, 200)).save(path, quality=70)
    img = load_image(path)
    assert img.size == (3000, 1000) and img.getpixel((10, 10))[2] > 150


def test_the_limit_is_a_one_line_image_error(tmp_path):
    path = tmp_path / "tall.png"
    path.write_bytes(png_1bit(2000, MAX_DECODE_PIXELS // 2000 + 1))
    with pytest.raises(ImageError, match=r"tall\.png: too many pixels .*limit is 40 MP"):
        load_image(path)
    assert MAX_DECODE_SIDE == 4096
