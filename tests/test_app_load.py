"""A burst of `/caption` requests against the real Gradio server (in-process, 127.0.0.1): every
request is served or refused as busy ("Queue is full", try again), none is lost, and the sessions
Gradio keeps are bounded (issue 16, items 10–11). `python -m bench.load` measures the full sizes."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from bench.load import one_request, summarize
from studio import ui
from studio.inference import load_slot
from studio.server import free_port
from tests.conftest import make_tiny_weights

N = 20


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "shapes.png"
    Image.new("RGB", (64, 48), (30, 120, 200)).save(path)
    return path


def slow_slot(folder, name):
    slot = load_slot(name, make_tiny_weights(folder, seed=5))
    assert slot.ready, slot.error
    cap = slot.captioner
    real = cap.caption

    def slow(*a, **kw):  # NOTE: the tiny model captions in ms; the queue must fill up for the test
        time.sleep(0.15)
        return real(*a, **kw)

    cap.caption = slow
    return slot


@pytest.mark.slow
def test_a_burst_is_served_or_told_busy_and_sessions_are_bounded(tmp_path, image, monkeypatch):
    monkeypatch.setattr(ui, "SESSIONS", 6)
    demo = ui.create_app(soft=slow_slot(tmp_path / "s", "soft"), hard=slow_slot(tmp_path / "h", "hard"),
                         examples=[], queue_size=4)
    port = free_port()
    ui.serve(demo, host="127.0.0.1", port=port, block=False, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        gate = threading.Barrier(N)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(N) as pool:
            results = list(pool.map(lambda _: one_request(url, image, gate), range(N)))
        s = summarize(results, N)
        assert time.perf_counter() - t0 < 60
        assert s["lost"] == 0 and s["failed"] == 0, s
        assert s["served"] >= 4 and s["busy"] >= 1, s  # the queue of 4 overflowed; the busy were told so
        assert all("Queue is full" in d for k, _, d in results if k == "busy")
        # N clients = N sessions; Gradio keeps only the most recent SESSIONS of them
        assert demo.state_session_capacity == 6
        assert 1 <= len(demo.state_holder.session_data) <= 6, len(demo.state_holder.session_data)
    finally:
        demo.close()


def test_default_queue_takes_a_hundred_requests():
    assert ui.QUEUE_SIZE >= 100 and ui.SESSIONS <= 1000


@pytest.mark.slow
def test_uploads_are_deleted_by_gradios_cache_cleanup(tmp_path, monkeypatch):
    """An API upload lands in Gradio's upload folder and `delete_cache` removes it once it is older
    than its age (the app: an hour, checked every 15 minutes; here 1 s, checked every second)."""
    from gradio_client import Client, handle_file

    from studio import layout

    uploads = tmp_path / "uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    monkeypatch.setattr(layout, "DELETE_CACHE", (1, 1))
    demo = ui.create_app(soft=slow_slot(tmp_path / "s", "soft"), hard=None, examples=[])
    port = free_port()
    ui.serve(demo, host="127.0.0.1", port=port, block=False, quiet=True)
    try:
        photo = tmp_path / "unique-7c1e.png"
        Image.new("RGB", (40, 30), (1, 2, 3)).save(photo)
        out = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            handle_file(str(photo)), "greedy", 1, 1.0, 3, api_name="/caption")
        assert out["soft"]["words"] is not None
        assert len(list(uploads.rglob(photo.name))) == 1  # the upload, kept while it is young
        deadline = time.monotonic() + 10
        while list(uploads.rglob(photo.name)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not list(uploads.rglob(photo.name)), "the upload was never deleted"
    finally:
        demo.close()
