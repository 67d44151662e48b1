"""bench/load.py's bookkeeping, without a server: outcomes counted per message, where a client's
call failed, and the markdown saying what a client timeout means."""
from __future__ import annotations

from bench.load import summarize, write_markdown


def test_summary_counts_each_message_and_when_failures_happened():
    results = [("served", 1.0, ""), ("served", 3.0, ""), ("busy", 0.1, "AppError: Queue is full"),
               ("failed", 5.2, "ReadTimeout in _upload_file: timed out"),
               ("failed", 5.0, "ReadTimeout in _upload_file: timed out"),
               ("failed", 6.0, "ReadTimeout in send_data: timed out")]
    s = summarize(results, 7)
    assert (s["served"], s["busy"], s["failed"], s["lost"]) == (2, 1, 3, 1)
    assert s["messages"] == {"AppError: Queue is full": 1, "ReadTimeout in _upload_file: timed out": 2,
                             "ReadTimeout in send_data: timed out": 1}
    assert s["failed_after_s"] == [5.0, 6.0] and s["latency_s_max"] == 3.0


def test_markdown_names_the_failures_and_the_client_timeout(tmp_path):
    burst = {**summarize([("served", 1.0, ""), ("failed", 5.0, "ReadTimeout in _upload_file: timed out")], 2),
             "rss_mb_after": 900.0}
    md = tmp_path / "load.md"
    write_markdown({"burst": burst, "client_timeout_s": None, "command": "python -m bench.load"}, md)
    text = md.read_text()
    assert "| burst | 2 | 1 | 0 | 1 | 0 |" in text
    assert "1 × `ReadTimeout in _upload_file: timed out`" in text and "httpx's 5 s" in text
    write_markdown({"burst": burst, "client_timeout_s": 60.0}, md)
    assert "Client timeout per HTTP call: 60.0 s" in md.read_text()
