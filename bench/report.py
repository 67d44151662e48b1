"""The results files: the keys results.json always holds, and results.md, the README's table."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PARTS = ("matmul", "train", "engine", "tricks", "beam", "latency", "encoder", "memory", "extract", "coco")

# NOTE: always present in results.json (null when that part was not run), so readers need no guards.
KEYS = ("train_speedup_vs_reference", "beam5_speedup_vs_per_image", "latency_ms_p50", "latency_ms_p95",
        "encoder_images_per_s", "matmul_gflops", "train_gflops", "peak_rss_mb_train", "peak_rss_mb_app",
        "train_host_syncs_per_step", "train_ops_per_step", "extract_vs_encoder", "peak_rss_mb_train_coco_scale",
        "train_streamed_vs_ram", "machine", "commands")

TARGETS = {  # key: (comparison, threshold) from the issue
    "train_speedup_vs_reference": (">=", 5.0),
    "train_host_syncs_per_step": ("<=", 1),
    "beam5_speedup_vs_per_image": (">=", 10.0),
    "latency_ms_p50": ("<=", 150.0),
    "encoder_images_per_s": (">=", 30.0),
    "extract_vs_encoder": (">=", 0.85),
    "peak_rss_mb_train_coco_scale": ("<=", 2048.0),
    "train_streamed_vs_ram": (">=", 0.9),
}


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "not run"
    if isinstance(v, float):
        v = f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return f"{v}{unit}"


def _target(key: str, value: Any) -> str:
    if key not in TARGETS:
        return ""
    op, thr = TARGETS[key]
    if value is None:
        return f"{op} {thr:g}"
    ok = value >= thr if op == ">=" else value <= thr
    return f"{op} {thr:g} {'✅' if ok else '❌'}"


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(what, figure, compared with, target) for each line of the table."""
    g = r.get
    out = [
        ("Training, LSTM soft attention (tokens/s)", _fmt(g("train_tokens_per_s")),
         f"tutorial-style loop: {_fmt(g('train_tokens_per_s_reference'))}", ""),
        ("… speed-up vs the tutorial-style decoder", _fmt(g("train_speedup_vs_reference"), "×"),
         f"FLOPs/token: ours {_fmt(_mflop(g('train_flops_per_token')), ' M')}, "
         f"reference {_fmt(_mflop(g('train_flops_per_token_reference')), ' M')}",
         _target("train_speedup_vs_reference", g("train_speedup_vs_reference"))),
        ("… ours with `--bf16` autocast (tokens/s)", _fmt(g("train_tokens_per_s_bf16")),
         f"{_fmt(g('train_speedup_vs_reference_bf16'), '×')} the fp32 tutorial-style loop", ""),
        ("Training FLOP rate (GFLOP/s)", _fmt(g("train_gflops")),
         f"matmul peak {_fmt(g('matmul_gflops'))} GFLOP/s → {_fmt(_pct(g('train_fraction_of_matmul')), ' %')}", ""),
        ("Host syncs per training step (plain/CUDA path)", _fmt(g("train_host_syncs_per_step")),
         f"CPU-kernels path: {_fmt(_path(g, 'kernels', 'syncs'))} (a CPU has no device to stall)",
         _target("train_host_syncs_per_step", g("train_host_syncs_per_step"))),
        ("Operator calls per training step", _fmt(g("train_ops_per_step")),
         f"CPU-kernels path {_fmt(_path(g, 'kernels', 'ops'))}; `--compile`: "
         f"{_fmt(g('train_ops_per_step_compiled'))} (operators + generated kernels)", ""),
        ("Beam 5, batched (images/s)", _fmt(g("beam5_images_per_s")),
         f"one image at a time, the tutorial's way: {_fmt(g('beam5_images_per_s_per_image'))}; "
         f"our search with B=1: {_fmt(g('beam5_images_per_s_ours_b1'))}", ""),
        ("… speed-up vs per image", _fmt(g("beam5_speedup_vs_per_image"), "×"),
         f"same captions as the tutorial's search: {_fmt(g('beam5_same_captions'))} "
         f"(as ours with B=1: {_fmt(g('beam5_same_captions_ours_b1'))})",
         _target("beam5_speedup_vs_per_image", g("beam5_speedup_vs_per_image"))),
        ("One photo → caption + maps, p50 (ms)", _fmt(g("latency_ms_p50")),
         f"p95 {_fmt(g('latency_ms_p95'))} ms over {_fmt(g('latency_photos'))} JPEGs",
         _target("latency_ms_p50", g("latency_ms_p50"))),
        ("Encoder, 224 px, batch 32 (images/s)", _fmt(g("encoder_images_per_s")),
         f"best variant {_fmt(g('encoder_best_images_per_s'))}; captions unchanged under bf16: "
         f"{_fmt(g('encoder_bf16_same_captions'))}",
         _target("encoder_images_per_s", g("encoder_images_per_s"))),
        ("Peak RSS, training (MB)", _fmt(g("peak_rss_mb_train")),
         f"{_fmt(g('train_memory_images'))} images' features in RAM: {_fmt(g('train_memory_features_mb'))} MB", ""),
        ("Peak RSS, app after one caption (MB)", _fmt(g("peak_rss_mb_app")),
         f"after start: {_fmt(g('app_rss_mb_after_start'))} MB", ""),
        ("Feature extraction, default decoding (images/s)", _fmt(g("extract_images_per_s")),
         f"{_fmt(g('extract_photos'))} JPEGs {_fmt(g('extract_photo_size'))}, batch {_fmt(g('extract_batch'))}, "
         f"{_fmt(g('extract_device'))}: {_fmt(g('extract_workers'))} worker processes, "
         f"{_fmt(g('extract_decode_threads'))} decode threads; with {_fmt(g('extract_process_workers'))} worker "
         f"processes instead: {_fmt(g('extract_images_per_s_processes'))} images/s "
         f"({_fmt(g('extract_vs_encoder_processes'), '×')}, per round {_rounds(g('extract_rounds_vs_encoder_processes'))}); "
         f"load average {_fmt(g('extract_loadavg_1min_before'))} → {_fmt(g('extract_loadavg_1min_after'))}", ""),
        ("… vs the encoder alone on decoded images", _fmt(g("extract_vs_encoder"), "×"),
         f"median of the rounds' own ratios; encoder only, 224 px: {_fmt(g('extract_encoder_only_images_per_s'))} images/s (best of rounds; "
         f"rounds {_rounds(g('extract_rounds_images_per_s'))} vs {_rounds(g('extract_rounds_encoder_only_images_per_s'))}, "
         f"per round {_rounds(g('extract_rounds_vs_encoder'))}); "
         f"decoding alone: {_fmt(g('extract_decode_only_images_per_s'))} images/s "
         f"({_fmt(g('extract_decode_only_cpu_ms_per_image'))} CPU ms each, JPEG draft); CPU ms per image: "
         f"extraction {_fmt(g('extract_cpu_ms_per_image'))}, encoder {_fmt(g('extract_encoder_only_cpu_ms_per_image'))} "
         f"(ratio {_fmt(g('extract_cpu_ratio'))})",
         _target("extract_vs_encoder", g("extract_vs_encoder"))),
        ("CPU training tricks: freed memory kept in the heap (speed-up of a step)", _fmt(g("tricks_scenes_heap_speedup"), "×"),
         f"bundled scenes model, vs glibc's default: {_rounds(g('tricks_scenes_step_ms_all'))} vs "
         f"{_rounds(g('tricks_scenes_step_ms_heap-default'))} ms per step (peak RSS {_fmt(g('tricks_scenes_peak_rss_mb_all'))} "
         f"vs {_fmt(g('tricks_scenes_peak_rss_mb_heap-default'))} MB); benchmark shape: {_fmt(g('tricks_bench_heap_speedup'), '×')}", ""),
        ("… the attention's tanh as 2σ(2x) − 1", _fmt(g("tricks_scenes_tanh_speedup"), "×"),
         f"vs torch's tanh: {_rounds(g('tricks_scenes_step_ms_torch-tanh'))} ms per step; benchmark shape: "
         f"{_fmt(g('tricks_bench_tanh_speedup'), '×')}; median of interleaved rounds, one process per run", ""),
        ("Peak RSS per process, training on a COCO-sized cache, streamed (MB)", _fmt(g("peak_rss_mb_train_coco_scale")),
         f"{_fmt(g('coco_cache_gb'))} GB cache, {_fmt(g('coco_workers'))} loader workers (main "
         f"{_fmt(g('coco_peak_rss_mb_streamed_main'))}, children {_fmt(g('coco_peak_rss_mb_streamed_children'))}); "
         f"split copied into RAM: {_fmt(g('coco_peak_rss_mb_ram'))}",
         _target("peak_rss_mb_train_coco_scale", g("peak_rss_mb_train_coco_scale"))),
        ("… tokens/s streamed vs in RAM", _fmt(g("train_streamed_vs_ram"), "×"),
         f"streamed {_fmt(g('coco_tokens_per_s_streamed'))}, in RAM {_fmt(g('coco_tokens_per_s_ram'))} tokens/s "
         f"({_fmt(g('coco_steps'))} steps of {_fmt(g('coco_batch'))}, 512-unit LSTM, 10,000 words)",
         _target("train_streamed_vs_ram", g("train_streamed_vs_ram"))),
    ]
    return out


def _rounds(v: Any) -> str:
    return "/".join(f"{x:g}" for x in v) if v else "not run"


def _path(g, path: str, key: str) -> Any:
    return ((g("engine_paths") or {}).get(path) or {}).get(key)


def _mflop(v: Any) -> float | None:
    return None if v is None else v / 1e6


def _pct(v: Any) -> float | None:
    return None if v is None else 100.0 * v


def _machine(m: dict[str, Any]) -> str:
    return (f"{m.get('cores')} cores, {m.get('cpu_model')}, torch {m.get('torch')} "
            f"({m.get('torch_threads')} threads), bf16 {'yes' if m.get('bf16_supported') else 'no'}")


def write_markdown(r: dict[str, Any], path: Path) -> None:
    m = r.get("machine") or {}
    lines = []
    if r.get("quick"):
        lines.append("> **Quick mode**: tiny sizes, a check that the benchmark runs, *not* a measurement.\n")
    lines.append(f"Machine: {_machine(m)}.\n")
    # NOTE: with --merge, parts measured earlier may come from another machine: say which
    others: dict[str, list[str]] = {}
    for part, info in (r.get("parts") or {}).items():
        pm = (info or {}).get("machine")
        if pm and _machine(pm) != _machine(m):
            others.setdefault(_machine(pm), []).append(part)
    for desc, parts in others.items():
        lines.append(f"Parts {', '.join(parts)} were measured on another machine: {desc}.\n")
    lines.append("| measurement | figure | compared with | target |")
    lines.append("|---|---|---|---|")
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(r)]
    variants = r.get("encoder_variants") or {}
    if variants:
        lines += ["", "Encoder variants (224 px, batch 32; drift = |features − fp32 channels-last|):", "",
                  "| variant | images/s | max abs drift | mean abs drift |", "|---|---|---|---|"]
        for name, v in variants.items():
            if "error" in v:
                lines.append(f"| {name} | failed: {v['error']} | | |")
            else:
                drift = [f"{v[k]:.3g}" if k in v else "" for k in ("max_abs_diff", "mean_abs_diff")]
                lines.append(f"| {name} | {_fmt(v.get('images_per_s'))} | {drift[0]} | {drift[1]} |")
    stages = r.get("latency_stage_ms_p50")
    if stages:
        lines += ["", "Latency by stage (p50, ms): " + ", ".join(f"{k[:-3]} {v}" for k, v in stages.items())]
    cmds = sorted(set((r.get("commands") or {}).values()))
    if cmds:
        lines += ["", "Produced by: " + "; ".join(f"`{c}`" for c in cmds)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def save_outputs(res: dict[str, Any], out_dir: Path, stem: str, markdown) -> str:
    """Write `stem`.json and `stem`.md (by `markdown(res, path)`) under out_dir; returns the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    markdown(res, out_dir / f"{stem}.md")
    return (out_dir / f"{stem}.md").read_text(encoding="utf-8")
