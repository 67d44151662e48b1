"""bench/grid_ready.py's report, without a browser."""
from __future__ import annotations

from bench.grid_ready import write_markdown


def test_markdown_lists_every_upload_and_the_medians(tmp_path):
    rows = [{"round": 1, "image": "a.jpg", "caption_shown_s": 0.5, "grids_ready_after_caption_s": 0.0},
            {"round": 1, "image": "b.jpg", "caption_shown_s": 0.7, "grids_ready_after_caption_s": 1.2}]
    res = {"rows": rows, "summary": {"caption_shown_s_median": 0.6, "grids_ready_s_median": 0.6,
                                     "grids_ready_s_max": 1.2},
           "machine": {"cores": 2, "cpu_model": "x"}, "command": "python -m bench.grid_ready"}
    md = tmp_path / "g.md"
    write_markdown(res, md)
    text = md.read_text()
    assert "| 1 | b.jpg | 0.7 | 1.2 |" in text and "| 1 | a.jpg | 0.5 | 0.0 |" in text
    assert "grids ready 0.6 s after it (max 1.2 s)" in text and "`python -m bench.grid_ready`" in text
