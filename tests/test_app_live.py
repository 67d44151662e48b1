"""`python app.py` for real: a subprocess on 127.0.0.1, called over HTTP with `gradio_client`;
plus what a fresh machine and Hugging Face Spaces read (front matter, requirements, the CLI).

The soft weights come through SAT_WEIGHTS_SOFT, the hard ones through --hard (both paths of
app.py's weights selection), both tiny random models, so the words are nonsense but real.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time

import gradio
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from sat.paths import REPO
from tests.app_harness import running_app
from tests.conftest import make_tiny_weights

EXAMPLE = REPO / "assets" / "examples" / "scene_008502.jpg"


@pytest.fixture(scope="module")
def live_root(tmp_path_factory):
    return tmp_path_factory.mktemp("live")


@pytest.fixture(scope="module")
def client(live_root):
    soft = make_tiny_weights(live_root / "soft", seed=5)
    hard = make_tiny_weights(live_root / "hard", seed=5, attention="hard")
    with running_app("--hard", str(hard), env={"SAT_WEIGHTS_SOFT": str(soft)}, log=live_root / "app.log") as url:
        yield Client(url, verbose=False)


@pytest.mark.slow
def test_caption_endpoint_over_http(client):
    assert EXAMPLE.is_file()
    data = client.predict(handle_file(str(EXAMPLE)), "beam", 3, 1.0, 8, api_name="/caption")
    assert data["image"] == {"width": 224, "height": 224}
    for name, kind in (("soft", "soft"), ("hard", "hard")):
        m = data[name]
        assert m["weights"].endswith(f"/{kind}")
        assert len(m["words"]) >= 1 and m["tokens"] == m["words"] + ([] if m["truncated"] else ["<end>"])
        att = np.asarray(m["attention"])
        assert att.shape == (len(m["tokens"]), 2, 2)  # one map per token, the tiny model's 2×2 grid
        assert np.allclose(att.sum(axis=(1, 2)), 1.0, atol=1e-3)
        assert len(m["token_probs"]) == len(m["tokens"])


@pytest.mark.slow
def test_bad_upload_is_an_error_and_the_server_goes_on(client, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not a png")
    with pytest.raises(AppError, match="can't read notes.png: not an image file"):
        client.predict(handle_file(str(bad)), "beam", 3, 1.0, 8, api_name="/caption")
    again = client.predict(handle_file(str(EXAMPLE)), "greedy", 1, 1.0, 4, api_name="/caption")
    assert len(again["soft"]["words"]) <= 4 and len(again["hard"]["attention"]) == len(again["hard"]["tokens"])


@pytest.mark.slow
def test_bad_input_through_the_api_is_one_line_in_the_server_log(client, live_root, tmp_path):
    """Our checks (an unreadable file, a bad option, a bad model name, no image) and Gradio's own
    (a slider's range): the client gets the message, the server's output one line, no traceback."""
    log = live_root / "app.log"
    bad = tmp_path / "memo-7f3a.png"
    bad.write_text("not a png")
    example = handle_file(str(EXAMPLE))
    calls = [((handle_file(str(bad)), "beam", 3, 1.0, 8), "/caption", "can't read memo-7f3a.png: not an image file"),
             ((example, "beam", 3, 1.0, 8, 0.0, 2.5), "/caption", "no-repeat n-gram size must be a whole number"),
             ((example, "beam", 3, 1.0, 8, 7, 3), "/caption", "Value 7 is greater than maximum value 5"),
             ((None, "beam", 3, 1.0, 8), "/caption", "no image given"),
             ((example, "medium", 1, 10, 50, "greedy", 1, 1.0, 6), "/steer", "model must be one of 'soft', 'hard'")]
    before = len(log.read_text(errors="replace"))
    for args, api, message in calls:
        with pytest.raises(AppError, match=re.escape(message)):
            client.predict(*args, api_name=api)
    deadline = time.monotonic() + 10
    while (new := log.read_text(errors="replace")[before:]).count("\n") < len(calls) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # NOTE: a traceback would follow its request's line; give it time to show
    new = log.read_text(errors="replace")[before:]
    assert "Traceback" not in new and "gradio/queueing.py" not in new, new
    lines = new.strip().splitlines()
    assert len(lines) == len(calls), new
    for (_, api, message), line in zip(calls, lines):
        assert message in line, (message, line)


@pytest.mark.slow
def test_startup_names_the_apps_share_flag_not_gradios_launch_argument(client, live_root):
    """Gradio's "set `share=True` in `launch()`" hint is replaced by the app's --share flag."""
    log = live_root / "app.log"
    deadline = time.monotonic() + 10
    while "--share" not in (out := log.read_text(errors="replace")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert re.search(r"^\* Running on local URL:  http://127\.0\.0\.1:\d+/?$", out, flags=re.M), out
    assert "* For a public gradio.live link: python app.py --share" in out
    assert "share=True" not in out and "launch()" not in out, out


@pytest.mark.slow
def test_caption_endpoint_takes_the_decoding_options_last(client):
    """5 arguments (older clients) get the app's defaults; the 6th and 7th are the length penalty
    and the no-repeat n-gram size (also by name); bad values are one clear error."""
    from studio.inference import DecodeOptions
    five = client.predict(handle_file(str(EXAMPLE)), "greedy", 1, 1.0, 8, api_name="/caption")
    default = DecodeOptions()
    seven = client.predict(handle_file(str(EXAMPLE)), "greedy", 1, 1.0, 8, default.length_penalty,
                           default.no_repeat_ngram_size, api_name="/caption")
    assert five["soft"]["words"] == seven["soft"]["words"]
    named = client.predict(handle_file(str(EXAMPLE)), "greedy", 1, 1.0, 8, api_name="/caption",
                           no_repeat_ngram_size=1)
    for m in (named["soft"], named["hard"]):
        assert len(set(m["words"])) == len(m["words"])  # n = 1: no word twice
        assert isinstance(m["truncated"], bool)
    with pytest.raises(AppError, match=r"no-repeat n-gram size must be a whole number 0–10, got 2.5"):
        client.predict(handle_file(str(EXAMPLE)), "beam", 3, 1.0, 8, 0.0, 2.5, api_name="/caption")
    with pytest.raises(AppError, match="Value 7 is greater than maximum value 5"):  # the slider's range (Gradio)
        client.predict(handle_file(str(EXAMPLE)), "beam", 3, 1.0, 8, 7, 3, api_name="/caption")


@pytest.mark.slow
def test_only_the_caption_and_steer_endpoints_are_public(client):
    info = client.view_api(return_format="dict", print_info=False)
    assert list(info["named_endpoints"]) == ["/caption", "/steer"]


# ----------------------------------------------------------------------------- deployment

def front_matter() -> dict[str, str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.match(r"---\n(.*?)\n---\n", text, flags=re.DOTALL)
    assert m, "README.md must start with the Spaces front matter"
    return dict(line.split(": ", 1) for line in m.group(1).splitlines())


def test_spaces_front_matter_matches_the_installed_gradio():
    fm = front_matter()
    assert fm["sdk"] == "gradio" and fm["app_file"] == "app.py" and (REPO / fm["app_file"]).is_file()
    assert fm["sdk_version"] == gradio.__version__
    assert fm["python_version"] == '"3.11"' and fm["pinned"] == "false"
    assert {"title", "emoji", "colorFrom", "colorTo"} <= set(fm)
    reqs = (REPO / "requirements.txt").read_text().splitlines()
    assert f"gradio=={gradio.__version__}" in reqs and "torch==2.14.1" in reqs
    assert any(r.startswith("huggingface_hub") for r in reqs)
    assert "-r requirements.txt" in (REPO / "requirements-dev.txt").read_text().splitlines()


def test_importing_app_does_no_work():
    code = ("import sys, time; t = time.perf_counter(); import app; "
            "print(time.perf_counter() - t, 'gradio' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    seconds, gradio_loaded, torch_loaded = out.stdout.split()
    assert gradio_loaded == "False" and torch_loaded == "False" and float(seconds) < 1.0


@pytest.mark.slow
def test_app_without_any_loadable_weights_exits_with_a_message(tmp_path):
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "app.py", "--soft", str(tmp_path / "nope"), "--hard",
                          "hf://owner/bad--name", "--port", "1"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Soft attention" in out.stderr and "does not exist" in out.stderr
    assert "Hard attention" in out.stderr and "not a Hub repository id" in out.stderr
    assert "no weights could be loaded" in out.stderr and "Traceback" not in out.stderr
    assert time.perf_counter() - t0 < 60


@pytest.mark.slow
def test_steer_endpoint_forces_the_word_onto_the_clicked_cell(client, tmp_path):
    """/steer: (image, model, word from 1, x, y, decoding options) → that model's caption in the
    /caption format, word t's attention on the clicked cell (the tiny models' 2×2 grid: 112-px cells
    of the 224-px example), the words before t kept; bad input is one clear error."""
    from PIL import Image

    orig = client.predict(handle_file(str(EXAMPLE)), "greedy", 1, 1.0, 6, api_name="/caption")
    for name in ("soft", "hard"):
        t = min(2, len(orig[name]["tokens"]))
        data = client.predict(handle_file(str(EXAMPLE)), name, t, 180, 20, "greedy", 1, 1.0, 6, api_name="/steer")
        assert set(data) == {"image", name} and data["image"] == {"width": 224, "height": 224}
        m = data[name]
        assert m["steered"]["cell"] == [0, 1] and m["steered"]["word"] == t
        assert m["steered"]["original"] == orig[name]["text"]
        att = np.asarray(m["attention"])
        assert att.shape == (len(m["tokens"]), 2, 2) and len(m["token_probs"]) == len(m["tokens"])
        if name == "hard":  # exactly the clicked cell
            assert att[t - 1].tolist() == [[0.0, 1.0], [0.0, 0.0]]
        else:  # a 1-cell Gaussian centred there
            assert att[t - 1].argmax() == 1 and att[t - 1, 0, 1] == pytest.approx(1 / (1 + 2 * np.exp(-0.5) + np.exp(-1)), abs=1e-4)
        assert m["tokens"][:t - 1] == orig[name]["tokens"][:t - 1]
    wide = tmp_path / "wide.png"
    Image.new("RGB", (300, 100), (200, 30, 30)).save(wide)
    with pytest.raises(AppError, match=r"point \(10, 50\) is outside the part of the image the model sees \(x 100–199"):
        client.predict(handle_file(str(wide)), "hard", 1, 10, 50, "greedy", 1, 1.0, 6, api_name="/steer")
    with pytest.raises(AppError, match=r"word index 99 is outside the caption"):
        client.predict(handle_file(str(EXAMPLE)), "hard", 99, 10, 50, "greedy", 1, 1.0, 6, api_name="/steer")
    with pytest.raises(AppError, match=r"model must be one of 'soft', 'hard', got 'medium'"):
        client.predict(handle_file(str(EXAMPLE)), "medium", 1, 10, 50, "greedy", 1, 1.0, 6, api_name="/steer")
