"""The benchmark code works and writes complete results (quick mode, tiny sizes: never a speed
assertion), and the tutorial-style reference decoder computes exactly our loss, so the training
speed comparison is between two implementations of the same model."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from bench.reference import TutorialDecoder
from bench.report import KEYS, PARTS
from bench.training import TrainShape, build_pair, make_batches
from sat.paths import REPO
SHAPE = TrainShape(batch=7, vocab=30, embed=12, attention=10, decoder=14, encoder_dim=16, grid=(2, 3),
                   min_words=2, max_words=7, dropout=0.0)


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("sort", [True, False])
@pytest.mark.slow
def test_reference_decoder_computes_our_loss_and_gradients(sort):
    ours, ref = build_pair(SHAPE, seed=1)
    fmap, caps = make_batches(SHAPE, 1, seed=2)[0]
    lengths = (caps != 0).sum(1)
    assert lengths.min() < lengths.max()  # the shrinking batch really shrinks
    if sort:
        order = lengths.argsort(descending=True)
        fmap, caps = fmap[order], caps[order]
    loss_ours, _ = ours.loss(fmap, caps, alpha_c=1.0)
    loss_ref = ref.loss(fmap.flatten(2).transpose(1, 2), caps, alpha_c=1.0)
    assert loss_ref.item() == pytest.approx(loss_ours.item(), rel=1e-5)
    loss_ours.backward()
    loss_ref.backward()
    g_ours, g_ref = _grads(ours.decoder), _grads(ref)
    for ours_name, ref_name in TutorialDecoder.NAME_MAP.items():
        if ours_name == "attention.score.bias":
            continue  # the softmax ignores it: both gradients are rounding noise around 0
        assert torch.allclose(g_ours[ours_name], g_ref[ref_name], atol=1e-6, rtol=1e-4), ours_name


def test_reference_recomputes_the_projection_every_step():
    _, ref = build_pair(SHAPE)
    calls = []
    ref.attention.encoder_att.register_forward_hook(lambda m, i, o: calls.append(i[0].size(0)))
    fmap, caps = make_batches(SHAPE, 1)[0]
    ref.loss(fmap.flatten(2).transpose(1, 2), caps)
    steps = int((caps != 0).sum(1).max()) - 1
    assert len(calls) == steps  # once per step, on the shrinking batch
    assert calls == sorted(calls, reverse=True) and calls[0] == SHAPE.batch and calls[-1] < SHAPE.batch


def test_loading_weights_with_other_names_is_refused():
    ours, ref = build_pair(SHAPE)
    ours.decoder.gate = None  # a decoder without the gating scalar has no f_beta to copy
    with pytest.raises(RuntimeError, match="f_beta"):
        ref.load_from(ours.decoder)


@pytest.mark.slow
def test_quick_run_writes_complete_results(tmp_path):
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    out = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out-dir", str(tmp_path)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    for key in KEYS:
        assert res.get(key) is not None, key
    assert res["quick"] is True and set(res["parts"]) == set(PARTS)
    m = res["machine"]
    assert m["cores"] >= 1 and m["cpu_model"] and m["torch"] == torch.__version__
    assert all(res["commands"][p].startswith("python -m bench --quick") for p in PARTS)
    assert res["beam5_same_captions_ours_b1"] == "4/4"  # batched and per-image search agree
    assert res["beam5_images_per_s_per_image"] > 0  # the tutorial-style per-image search ran
    assert res["latency_ms_p95"] >= res["latency_ms_p50"] > 0
    assert res["peak_rss_mb_train"] > 50 and res["peak_rss_mb_app"] > res["peak_rss_mb_train"] / 10
    assert "bf16 autocast channels-last" in res["encoder_variants"] or not m["bf16_supported"]
    for shape in ("scenes", "bench"):  # the tricks part ran every variant's child per shape
        ms = {v: res[f"tricks_{shape}_step_ms_{v}"] for v in ("all", "heap-default", "torch-tanh")}
        assert all(len(v) == 1 and v[0] > 0 for v in ms.values()), ms
        assert res[f"tricks_{shape}_heap_speedup"] == pytest.approx(ms["heap-default"][0] / ms["all"][0], abs=1e-3)
        assert res[f"tricks_{shape}_tanh_speedup"] == pytest.approx(ms["torch-tanh"][0] / ms["all"][0], abs=1e-3)
    md = (tmp_path / "results.md").read_text()
    assert "Quick mode" in md and "| measurement | figure | compared with | target |" in md
    assert f"torch {torch.__version__}" in md and "python -m bench --quick" in md


def test_only_runs_the_named_parts_and_rejects_unknown_ones(tmp_path, monkeypatch):
    from bench.__main__ import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # NOTE: restored after the test (main sets it)
    threads = torch.get_num_threads()
    try:
        assert main(["--quick", "--only", "matmul", "--out-dir", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["matmul_gflops"] > 0 and res["train_speedup_vs_reference"] is None
    assert "not run" in (tmp_path / "results.md").read_text()
    with pytest.raises(SystemExit):
        main(["--quick", "--only", "warp-drive", "--out-dir", str(tmp_path)])


def _tutorial_and_ours(seed: int = 3):
    ours, ref = build_pair(SHAPE, seed=seed)
    ours.eval()
    ref.eval()
    fmap, _ = make_batches(SHAPE, 1, seed=seed)[0]
    return ours, ref, ours.annotations(fmap)  # (B, L, D)


def test_reference_starts_as_our_decoder_does_with_a_constant_start_state():
    """The bundled soft model starts from f_init's bias (init_state "zeros"): so does its reference."""
    from bench.reference import reference_for
    from sat.config import ModelConfig
    from sat.model import CaptionModel
    torch.manual_seed(4)
    ours = CaptionModel(ModelConfig(encoder="test-tiny", encoder_dim=16, grid=(2, 3), vocab_size=30, max_len=7,
                                    embed_dim=12, attention_dim=10, decoder_dim=14, dropout=0.0, init_state="zeros"))
    ref = reference_for(ours.decoder, attention_dim=10, dropout=0.0)
    assert ref.init_from_mean is False
    fmap, caps = make_batches(SHAPE, 1, seed=5)[0]
    loss_ours, _ = ours.loss(fmap, caps, alpha_c=1.0)
    loss_ref = ref.loss(fmap.flatten(2).transpose(1, 2), caps, alpha_c=1.0)
    assert loss_ref.item() == pytest.approx(loss_ours.item(), rel=1e-5)
    ref.init_from_mean = True  # the tutorial's own start: another model
    assert ref.loss(fmap.flatten(2).transpose(1, 2), caps, alpha_c=1.0).item() != pytest.approx(loss_ours.item(), rel=1e-5)


def test_tutorial_beam_of_one_is_our_greedy_search():
    from sat.search import greedy
    ours, ref, feats = _tutorial_and_ours()
    hyps = greedy(ours.decoder, feats, max_len=5)
    for i, hyp in enumerate(hyps):
        tokens, score = ref.beam_search_one(feats[i:i + 1], beam_size=1, max_len=5)
        assert tokens == hyp.tokens
        assert score == pytest.approx(hyp.logprob, abs=1e-4)


@pytest.mark.parametrize("beam", [2, 4])
def test_tutorial_beam_returns_a_finished_caption_scored_by_the_model(beam):
    """Its score is the model's own log-probability of the caption it returns; the caption ends with
    <end> or is cut at max_len, and never holds <pad>/<start>; and it mostly agrees with our batched search (the two differ
    only in how finished beams compete: the tutorial shrinks k, ours keeps them in the top K)."""
    from sat.search import beam_search
    ours, ref, feats = _tutorial_and_ours(seed=4)
    agree = 0
    for i in range(feats.size(0)):
        tokens, score = ref.beam_search_one(feats[i:i + 1], beam_size=beam, max_len=4)
        assert (tokens[-1] == 2 or len(tokens) == 4) and 0 not in tokens and 1 not in tokens and len(tokens) <= 5
        inputs = torch.tensor([[1] + tokens[:-1]])
        logits, _, _ = ours.decoder(feats[i:i + 1], inputs)
        # NOTE: search scores with the full softmax's log p (pad/start masked, not renormalised)
        lp = torch.log_softmax(logits[0].detach(), -1).gather(1, torch.tensor(tokens)[:, None]).sum()
        assert score == pytest.approx(float(lp), abs=1e-4)
        mine = beam_search(ours.decoder, feats[i:i + 1], beam_size=beam, max_len=4)[0]
        agree += mine.tokens == tokens
    assert agree >= feats.size(0) // 2  # the two beam bookkeepings mostly pick the same caption


def test_extraction_bench_measures_the_real_extraction_against_the_encoder():
    from bench.extraction import bench_extract
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = bench_extract(n_photos=5, size=(96, 72), batch=2, workers=2, repeats=1, image_size=64)
    finally:
        torch.set_num_threads(threads)
    # the cache written through the decode workers holds exactly the encoder's maps of the decoded photos
    assert r["extract_max_abs_diff_vs_encoder"] == 0.0 and r["extract_processes_same_cache"] is True
    ratio = r["extract_images_per_s"] / r["extract_encoder_only_images_per_s"]  # one round: its own ratio
    assert r["extract_vs_encoder"] == pytest.approx(ratio, rel=0.05) and r["extract_images_per_s"] > 0
    assert r["extract_rounds_vs_encoder"] == [r["extract_vs_encoder"]]
    assert r["extract_photos"] == 5 and r["extract_photo_size"] == "96x72"
    # the CPU default decodes with threads in the process; the 2-process run is timed beside it
    assert r["extract_workers"] == 0 and r["extract_decode_threads"] == 1  # one torch thread here
    assert r["extract_process_workers"] == 2 and r["extract_images_per_s_processes"] > 0
    assert r["extract_encoder"].startswith("efficientnet-lite0 (stride16: (112, 4, 4))")
    # CPU time: extraction (main process + its decode workers) does the encoder's work and the decoding
    assert r["extract_cpu_ms_per_image"] > r["extract_encoder_only_cpu_ms_per_image"] > 0
    assert r["extract_cpu_ratio"] == pytest.approx(
        r["extract_encoder_only_cpu_ms_per_image"] / r["extract_cpu_ms_per_image"], rel=0.05)
    assert r["extract_decode_only_cpu_ms_per_image"] > 0
    paired = [e / n for e, n in zip(r["extract_rounds_images_per_s"], r["extract_rounds_encoder_only_images_per_s"])]
    assert len(r["extract_rounds_vs_encoder"]) == 1 and r["extract_rounds_vs_encoder"] == pytest.approx(paired, rel=0.02)


def test_results_md_names_parts_measured_on_another_machine(tmp_path):
    from bench.report import write_markdown
    here = {"cores": 2, "cpu_model": "AMD EPYC", "torch": "2.14", "torch_threads": 2, "bf16_supported": True}
    there = {**here, "cpu_model": "Intel Xeon", "torch": "2.13"}
    res = {"machine": here, "parts": {"train": {"machine": there}, "extract": {"machine": here}},
           "extract_vs_encoder": 0.8}
    write_markdown(res, tmp_path / "r.md")
    md = (tmp_path / "r.md").read_text()
    assert "Machine: 2 cores, AMD EPYC, torch 2.14" in md
    assert "Parts train were measured on another machine: 2 cores, Intel Xeon, torch 2.13" in md
    assert "| … vs the encoder alone on decoded images | 0.80× |" in md and ">= 0.85 ❌" in md
    res["parts"]["train"]["machine"] = here
    write_markdown(res, tmp_path / "r.md")
    assert "another machine" not in (tmp_path / "r.md").read_text()
