"""sat/viz.py: attention upsampling geometry (crop / pad), mass, overlay, the PNG grid and the CLI flag."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from sat.viz import (GRID_PAD, attention_grid, attention_grid_image, attention_grid_png, attention_panel, draw_box, normalize_for_display, overlay,
                     save_attention_grid, square_box, upsample_attention)
from tests.conftest import make_tiny_weights


def one_hot(h: int, w: int, i: int, j: int) -> np.ndarray:
    a = np.zeros((h, w), np.float32)
    a[i, j] = 1.0
    return a


def cell_region(size, i, j, *, grid, resize, image_size=224):
    """Photo-pixel box [x0, x1) × [y0, y1) covered by grid cell (i, j), computed independently."""
    W, H = size
    gh, gw = grid
    if resize == "crop":
        side = min(W, H)  # the central square of the photo
        left, top = (W - side) / 2, (H - side) / 2
    else:
        side = max(W, H)  # the photo sits centred in a larger square
        left, top = -(side - W) / 2, -(side - H) / 2
    cw, ch = side / gw, side / gh
    return left + j * cw, left + (j + 1) * cw, top + i * ch, top + (i + 1) * ch


@pytest.mark.parametrize("resize", ["crop", "pad"])
@pytest.mark.parametrize("size", [(224, 224), (300, 200), (180, 320)])
def test_shape_and_one_hot_peak_inside_its_cell(resize, size):
    grid = (7, 7)
    for i, j in [(3, 3), (1, 5), (5, 2)]:
        x0, x1, y0, y1 = cell_region(size, i, j, grid=grid, resize=resize)
        if x1 <= 0 or y1 <= 0 or x0 >= size[0] or y0 >= size[1]:
            continue  # the cell lies entirely on padding
        for smooth in (0.0, 0.5):
            m = upsample_attention(one_hot(*grid, i, j), size=size, resize=resize,
                                   image_size=224, smooth=smooth)
            assert m.shape == (size[1], size[0]) and m.dtype == np.float32
            y, x = np.unravel_index(int(m.argmax()), m.shape)
            assert x0 - 1 <= x < x1 + 1 and y0 - 1 <= y < y1 + 1, (resize, size, i, j, smooth, x, y)


def test_sharp_blocks_match_the_cell_exactly_on_a_square_image():
    m = upsample_attention(one_hot(7, 7, 2, 4), size=(224, 224), resize="crop", image_size=224,
                           sigma=0)
    nz = np.argwhere(m > 0)
    assert nz.min(0).tolist() == [64, 128] and nz.max(0).tolist() == [95, 159]
    assert np.allclose(m[m > 0], 1 / 32 ** 2)


def test_crop_puts_zero_outside_the_central_square_and_keeps_all_mass():
    uniform = np.full((7, 7), 1 / 49, np.float32)
    m = upsample_attention(uniform, size=(400, 200), resize="crop", image_size=224)
    assert m.sum() == pytest.approx(1.0, abs=1e-5)
    assert m[:, :100].sum() == 0 and m[:, 300:].sum() == 0
    assert np.allclose(m[:, 100:300], 1 / (200 * 200), rtol=1e-3)  # uniform stays uniform


def test_pad_drops_the_mass_on_the_padding():
    uniform = np.full((7, 7), 1 / 49, np.float32)
    m = upsample_attention(uniform, size=(400, 200), resize="pad", image_size=224)
    assert m.sum() == pytest.approx(0.5, abs=0.01)  # the photo covers half the square
    # a cell wholly on the padding (top row of a wide photo) leaves nothing on the photo
    top = upsample_attention(one_hot(7, 7, 0, 3), size=(400, 200), resize="pad", image_size=224,
                             sigma=0)
    assert top.sum() == 0


@pytest.mark.parametrize("resize", ["crop", "pad"])
def test_smoothing_spreads_mass_and_keeps_it_in_the_square(resize):
    a = one_hot(7, 7, 3, 3)
    sharp = upsample_attention(a, size=(224, 224), resize=resize, image_size=224, sigma=0)
    soft = upsample_attention(a, size=(224, 224), resize=resize, image_size=224, smooth=0.5)
    wider = upsample_attention(a, size=(224, 224), resize=resize, image_size=224, smooth=1.0)
    assert (sharp > 0).sum() == 32 * 32
    assert (soft > 1e-9).sum() > 2 * 32 * 32 and (wider > 1e-9).sum() > (soft > 1e-9).sum()
    assert soft.max() < sharp.max() and wider.max() < soft.max()
    for m in (sharp, soft, wider):
        assert m.sum() == pytest.approx(1.0, abs=1e-5)
    # a corner cell smoothed with reflecting borders keeps its mass too
    corner = upsample_attention(one_hot(7, 7, 0, 0), size=(224, 224), resize=resize,
                                image_size=224, smooth=1.0)
    assert corner.sum() == pytest.approx(1.0, abs=1e-5)


def test_cell_border_keeps_edge_peaks_at_the_cell_centre_and_the_mass():
    a = one_hot(7, 7, 3, 0)  # left edge cell: x 0..31, centre 16
    reflect = upsample_attention(a, size=(224, 224), image_size=224, border="reflect")
    cell = upsample_attention(a, size=(224, 224), image_size=224, border="cell")
    assert np.unravel_index(int(reflect.argmax()), reflect.shape)[1] == 0  # mirrored: edge peak
    y, x = np.unravel_index(int(cell.argmax()), cell.shape)
    assert 13 <= x <= 18 and 109 <= y <= 114
    corner = upsample_attention(one_hot(7, 7, 0, 6), size=(300, 200), image_size=224,
                                border="cell", smooth=1.0)
    assert corner.sum() == pytest.approx(1.0, abs=1e-5)
    mixed = np.random.default_rng(1).dirichlet(np.ones(49)).reshape(7, 7)
    for resize in ("crop", "pad"):
        m = upsample_attention(mixed, size=(224, 224), resize=resize, image_size=224, border="cell")
        assert m.sum() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="border"):
        upsample_attention(a, size=(10, 10), image_size=224, border="wrap")


def test_sigma_in_pixels_overrides_smooth():
    a = one_hot(7, 7, 3, 3)
    by_px = upsample_attention(a, size=(448, 448), resize="crop", image_size=224, sigma=32.0)
    by_cell = upsample_attention(a, size=(448, 448), resize="crop", image_size=224, smooth=0.5)
    assert np.allclose(by_px, by_cell, atol=1e-7)  # one cell = 64 photo px, half a cell = 32 px


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="resize"):
        upsample_attention(np.ones((2, 2)), size=(10, 10), resize="stretch", image_size=64)
    with pytest.raises(ValueError, match="grid"):
        upsample_attention(np.ones(4), size=(10, 10), image_size=64)
    with pytest.raises(ValueError, match="non-negative"):
        upsample_attention(-np.ones((2, 2)), size=(10, 10), image_size=64)


def test_normalize_for_display():
    m = np.array([[0.2, 0.4], [0.6, 1.0]])
    assert np.allclose(normalize_for_display(m), [[0, 0.25], [0.5, 1.0]])
    assert np.allclose(normalize_for_display(m, mode="max"), m)
    assert normalize_for_display(np.full((3, 3), 0.1)).min() == 1.0
    assert normalize_for_display(np.zeros((3, 3))).max() == 0.0


def test_overlay_size_mode_and_blend():
    img = Image.new("RGB", (30, 20), (0, 0, 0))
    m = np.zeros((20, 30))
    m[5:10, 5:10] = 1.0
    out = overlay(img, m, opacity=0.6, cmap="gray")
    assert out.size == (30, 20) and out.mode == "RGB"
    a = np.asarray(out)
    assert a[7, 7].tolist() == [153, 153, 153] and a[0, 0].tolist() == [0, 0, 0]
    assert overlay(Image.new("L", (30, 20)), m).mode == "RGB"
    with pytest.raises(ValueError, match="does not match"):
        overlay(img, np.zeros((30, 20)))


def test_spotlight_keeps_attended_colours_and_dims_the_rest_and_the_cropped_strips():
    # a yellow circle's colour must survive where the model looked (issue 15: jet turned it grey)
    img = Image.new("RGB", (300, 200), (250, 220, 30))
    m = upsample_attention(one_hot(2, 2, 0, 1), size=img.size, resize="crop", image_size=224, smooth=0)
    a = np.asarray(overlay(img, m, opacity=0.75, style="spotlight"), dtype=int)
    x0, x1, y0, y1 = (round(v) for v in cell_region(img.size, 0, 1, grid=(2, 2), resize="crop"))
    assert (a[y0 + 2:y1 - 2, x0 + 2:x1 - 2] == [250, 220, 30]).all()  # full brightness and colour
    assert np.abs(a[150, 100] - np.array([250, 220, 30]) * 0.25).max() <= 1  # another cell: dimmed
    assert np.abs(a[:, :45] - np.array([250, 220, 30]) * 0.25).max() <= 1  # cropped-off strip: dimmed
    assert (np.asarray(overlay(img, m, opacity=0.0, style="spotlight")) == np.asarray(img)).all()
    with pytest.raises(ValueError, match="style"):
        overlay(img, m, style="glow")


@pytest.mark.parametrize("resize", ["crop", "pad"])
def test_square_box_and_cell_boxes_follow_the_crop_geometry(resize):
    size = (300, 200)
    seen = square_box(size, resize=resize, image_size=224)
    assert seen == ((50, 0, 250, 200) if resize == "crop" else (0, 0, 300, 200))
    for i, j in ((0, 0), (1, 2), (2, 1)):
        x0, x1, y0, y1 = cell_region(size, i, j, grid=(3, 3), resize=resize)
        box = square_box(size, resize=resize, image_size=224, cell=(i, j), grid=(3, 3))
        expect = (max(0, x0), max(0, y0), min(300, x1), min(200, y1))
        if expect[3] <= expect[1]:  # a cell wholly over the padding
            assert box is None
        else:
            assert np.allclose(box, expect, atol=1.5), (box, expect)
    img = draw_box(Image.new("RGB", size, (0, 0, 0)), (10, 20, 60, 80), width=2)
    a = np.asarray(img)
    assert (a[20, 10:60] == 255).all() and (a[79, 10:60] == 255).all() and (a[50, 30] == 0).all()
    dashed = np.asarray(draw_box(Image.new("RGB", size, (0, 0, 0)), (10, 20, 60, 80), dash=4))
    assert 0 < (dashed[20, 10:60, 0] == 255).mean() < 1  # gaps in the dashed line


def test_attention_grid_panels_titles_and_wrapping():
    img = Image.new("RGB", (120, 80), (90, 120, 150))
    words = ["a", "red", "circle", "to", "the", "left", "of", "a", "blue", "square"]
    att = np.random.default_rng(0).dirichlet(np.ones(4), size=11).reshape(11, 2, 2)
    probs = [0.5] * 11
    fig = attention_grid(img, words, att, probs=probs, cols=4, resize="pad", image_size=64)
    assert len(fig.axes) == 12  # the photo + 10 words + <end>
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "image" and titles[1] == "a 50%" and titles[-1] == "<end> 50%"
    rows = {round(ax.get_position().y0, 3) for ax in fig.axes}
    assert len(rows) == 3  # 12 panels in rows of 4
    default = attention_grid(img, words + ["<end>"], att)
    assert len({round(ax.get_position().y0, 3) for ax in default.axes}) == 3  # 5 per row
    with pytest.raises(ValueError, match="tokens"):
        attention_grid(img, ["a"], att)


def test_grid_panels_are_the_app_overlay_with_its_boxes():
    """The downloadable grid shows what the app's overlay shows: the dashed square the model saw on
    a non-square photo and, for hard attention, the solid outline of the cell it read."""
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8))  # 3:2, centre crop
    att = np.full((3, 2, 2), 0.02, np.float32)
    for t in range(3):
        att[t].flat[t] = 0.94
    opts = dict(image_size=64, style="spotlight", opacity=0.7, hard=True)
    grid = np.asarray(attention_grid_image(img, ["a", "red"], att, cols=4, font_size=14, **opts))
    head = 14 + 8
    for t in range(3):
        x, y = GRID_PAD + (t + 1) * (120 + GRID_PAD), GRID_PAD + head
        want = np.asarray(attention_panel(img, att[t], **opts))
        assert np.array_equal(grid[y:y + 80, x:x + 120], want), t
    plain = np.asarray(overlay(img, upsample_attention(att[1], size=img.size, image_size=64),
                               opacity=0.7, style="spotlight"))
    panel = np.asarray(attention_panel(img, att[1], **opts))
    x0, y0, x1, y1 = square_box(img.size, image_size=64)
    assert (x0, x1) == (20, 100) and (panel[y0 + 40, x0 + 1] != plain[y0 + 40, x0 + 1]).any()  # dashed edge
    cx0, cy0, cx1, cy1 = square_box(img.size, image_size=64, cell=(0, 1), grid=(2, 2))  # argmax of att[1]
    row = slice(cx0 + 5, cx1 - 5)  # the cell's bottom edge, inside the square (off the dashed line)
    assert (panel[cy1 - 1, row] == 255).all()  # the solid outline of the cell read
    soft = np.asarray(attention_panel(img, att[1], **{**opts, "hard": False}))
    assert np.array_equal(soft[cy1 - 1, row], plain[cy1 - 1, row])  # soft: no cell outline


def test_grid_png_bytes_and_file(tmp_path):
    img = Image.new("RGB", (64, 64), (200, 50, 50))
    att = np.full((3, 2, 2), 0.25, np.float32)
    data = attention_grid_png(img, ["a", "red"], att, image_size=64)
    assert Image.open(io.BytesIO(data)).format == "PNG"
    path = save_attention_grid(img, ["a", "red", "<end>"], att, tmp_path / "sub" / "g.png",
                               image_size=64)
    assert path.is_file() and Image.open(path).size[0] > 100


def test_cli_attention_png(tmp_path, capsys):
    from sat.__main__ import main

    weights = make_tiny_weights(tmp_path / "w")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (96, 64), (10, 200, 30)).save(photo)
    out = tmp_path / "att.png"
    assert main([str(photo), "--weights", str(weights), "--attention-png", str(out),
                 "--device", "cpu", "--beam-size", "1", "--mode", "greedy"]) == 0
    assert Image.open(out).format == "PNG"
    assert main([str(photo), str(photo), "--weights", str(weights), "--attention-png", str(out),
                 "--device", "cpu", "--mode", "greedy"]) == 0
    assert (tmp_path / "att_1.png").is_file() and (tmp_path / "att_2.png").is_file()
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
