"""`python -m bench.load`: a burst and a sustained load on `/caption` of the real app, on 127.0.0.1.

    python -m bench.load                      # 100 at once, then 400 from 4 clients at a time
    python -m bench.load --burst 20 --sustained 60 --out-dir /tmp/load   # a quick look

It starts `python app.py` (the bundled weights) with its own Gradio upload folder, then:

- burst: `--burst` clients, each with its own session, send one request at the same moment;
  every request ends served, refused as busy ("Queue is full", HTTP 503: try again) or failed
  (anything else); `lost` counts requests that ended none of these ways (must be 0);
- sustained: `--sustained` requests, `--concurrency` at a time, each from a new session (as a
  public Space sees visitors), with the server's RSS after every `--chunk` requests.

Writes `load.json` (every figure, the machine, the command) and `load.md` (a table) to `--out-dir`.
Counts and time are bounded (`--deadline`); what the machine was doing alongside shows in latency.
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sat.paths import EXAMPLES

from . import system
from .report import save_outputs

HERE = Path(__file__).resolve().parent
IMAGE = EXAMPLES / "scene_008502.jpg"
BUSY = "Queue is full"


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return None


def _where(e: BaseException) -> str:
    """The last gradio_client function the exception passed through ("_upload_file", …): which of a
    request's HTTP calls failed (the upload, the queue join, the result stream)."""
    import traceback

    frames = [f for f in traceback.extract_tb(e.__traceback__) if "gradio_client" in f.filename]
    return f" in {frames[-1].name}" if frames else ""


def one_request(url: str, image: Path, start: threading.Barrier | None = None,
                timeout: float | None = None) -> tuple[str, float, str]:
    """(outcome, seconds, detail): outcome is served, busy or failed; a new client = a new session.
    ``timeout``: seconds for each of the client's HTTP calls (None: gradio_client's own defaults,
    httpx's 5 s for the upload and the queue join)."""
    from gradio_client import Client, handle_file

    try:
        client = Client(url, verbose=False, download_files=False,
                        httpx_kwargs=None if timeout is None else {"timeout": timeout})
    except Exception as e:  # noqa: BLE001 — counted, never raised
        return "failed", 0.0, f"connect: {type(e).__name__}: {e}"
    if start is not None:
        start.wait(timeout=120)
    t0 = time.perf_counter()
    try:
        out = client.predict(handle_file(str(image)), "beam", 3, 1.0, 20, api_name="/caption")
        ok = isinstance(out, dict) and "soft" in out and "words" in out["soft"]
        return ("served" if ok else "failed"), time.perf_counter() - t0, "" if ok else str(out)[:200]
    except Exception as e:  # noqa: BLE001
        kind = "busy" if BUSY.lower() in str(e).lower() else "failed"
        return kind, time.perf_counter() - t0, f"{type(e).__name__}{_where(e)}: {e}"[:200]
    finally:
        client.close() if hasattr(client, "close") else None


def summarize(results: list[tuple[str, float, str]], n: int) -> dict[str, Any]:
    lat = sorted(s for k, s, _ in results if k == "served")
    counts = {k: sum(1 for r in results if r[0] == k) for k in ("served", "busy", "failed")}
    out: dict[str, Any] = {"requests": n, **counts, "lost": n - sum(counts.values())}
    if lat:
        out.update({"latency_s_p50": round(statistics.median(lat), 2),
                    "latency_s_p95": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 2),
                    "latency_s_max": round(lat[-1], 2)})
    details = [d for k, _, d in results if k != "served" and d]
    out["messages"] = {d: details.count(d) for d in sorted(set(details))[:5]}  # message → how many
    failed = sorted(s for k, s, _ in results if k == "failed")
    if failed:
        out["failed_after_s"] = [round(failed[0], 1), round(failed[-1], 1)]  # how long the failures took
    return out


def run_load(*, burst: int, sustained: int, concurrency: int, chunk: int, deadline: float,
             image: Path = IMAGE, app_args: list[str] | None = None,
             client_timeout: float | None = None) -> dict[str, Any]:
    from studio.server import serving

    uploads = Path(tempfile.mkdtemp(prefix="sat-load-uploads-"))
    res: dict[str, Any] = {}
    with serving(*(app_args or []), env={"GRADIO_TEMP_DIR": str(uploads)}, timeout=180) as app:
        proc, url = app.proc, app.url
        res["app_command"] = app.command
        t_end = time.monotonic() + deadline
        res["rss_mb_start"] = rss_mb(proc.pid)
        if burst:
            gate = threading.Barrier(burst)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(burst) as pool:
                results = list(pool.map(lambda _: one_request(url, image, gate, client_timeout), range(burst)))
            res["burst"] = {**summarize(results, burst), "seconds": round(time.perf_counter() - t0, 1),
                            "rss_mb_after": rss_mb(proc.pid)}
        if sustained:
            series, results = [], []
            t0 = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                for start in range(0, sustained, chunk):
                    if time.monotonic() > t_end:
                        break
                    k = min(chunk, sustained - start)
                    results += list(pool.map(lambda _: one_request(url, image, None, client_timeout), range(k)))
                    series.append({"requests": len(results), "rss_mb": rss_mb(proc.pid)})
            res["sustained"] = {**summarize(results, len(results)), "seconds": round(time.perf_counter() - t0, 1),
                                "concurrency": concurrency, "rss_series": series}
        files = [p for p in uploads.rglob("*") if p.is_file()]
        empty = [p for p in files if p.stat().st_size == 0]
        res["upload_folder"] = {"files": len(files), "empty_files": len(empty),
                                "mb": round(sum(p.stat().st_size for p in files) / 2**20, 2),
                                "empty_examples": [str(p.relative_to(uploads)) for p in empty[:3]],
                                "path": str(uploads)}
        res["rss_mb_end"] = rss_mb(proc.pid)
        peak = system.vm_hwm_mb(proc.pid)
        res["peak_rss_mb"] = None if peak is None else round(peak, 1)
    return res


def write_markdown(res: dict[str, Any], path: Path) -> None:
    m = res.get("machine") or {}
    lines = [f"Machine: {m.get('cores')} cores, {m.get('cpu_model')} (shared: latency includes other work).", "",
             "| phase | requests | served | busy (503, try again) | failed | lost | p50 s | p95 s | max s | RSS after MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for phase in ("burst", "sustained"):
        r = res.get(phase)
        if r:
            rss = r.get("rss_mb_after") or (r["rss_series"][-1]["rss_mb"] if r.get("rss_series") else None)
            lines.append(f"| {phase} | {r['requests']} | {r['served']} | {r['busy']} | {r['failed']} | {r['lost']} | "
                         f"{r.get('latency_s_p50')} | {r.get('latency_s_p95')} | {r.get('latency_s_max')} | {rss} |")
    s = res.get("sustained") or {}
    if s.get("rss_series"):
        lines += ["", f"Server RSS: start {res.get('rss_mb_start')} MB; during the sustained load: " +
                  ", ".join(f"{p['rss_mb']} MB after {p['requests']}" for p in s["rss_series"]) +
                  f"; peak {res.get('peak_rss_mb')} MB."]
    for phase in ("burst", "sustained"):
        msgs = (res.get(phase) or {}).get("messages") or {}
        if msgs:
            lines += ["", f"{phase.capitalize()}, what the not-served requests got: " +
                      "; ".join(f"{n} × `{m}`" for m, n in msgs.items()) + "."]
    t = res.get("client_timeout_s")
    lines += ["", "Client timeout per HTTP call: " + ("gradio_client's defaults (httpx's 5 s for the upload "
              "and the queue join, none while waiting for the result)" if t is None else f"{t} s") + ". "
              "NOTE: a `ReadTimeout in _upload_file` / `in send_data` is the client giving up on the upload "
              "or the queue join, before the server has answered; the server refuses nothing that way "
              "(its refusal is busy: 'Queue is full', HTTP 503)."]
    u = res.get("upload_folder") or {}
    lines += ["", f"Gradio upload folder at the end: {u.get('files')} files ({u.get('empty_files')} empty), "
              f"{u.get('mb')} MB.", "", f"Produced by: `{res.get('command')}`"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--burst", type=int, default=100, help="requests sent at the same moment (0 = skip)")
    p.add_argument("--sustained", type=int, default=400, help="requests of the sustained phase (0 = skip)")
    p.add_argument("--concurrency", type=int, default=4, help="sustained: requests in flight at a time")
    p.add_argument("--chunk", type=int, default=100, help="sustained: read the server's RSS every N requests")
    p.add_argument("--deadline", type=float, default=420.0, help="stop starting sustained chunks after N s")
    p.add_argument("--client-timeout", type=float, default=None,
                   help="seconds for each HTTP call of a client (default: gradio_client's, 5 s for the upload)")
    p.add_argument("--out-dir", type=Path, default=HERE, help="where load.json and load.md go")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    if min(a.burst, a.sustained) < 0 or a.concurrency < 1 or a.chunk < 1:
        p.error("counts must be ≥ 0, --concurrency and --chunk ≥ 1")
    res = run_load(burst=a.burst, sustained=a.sustained, concurrency=a.concurrency, chunk=a.chunk,
                   deadline=a.deadline, client_timeout=a.client_timeout)
    res["client_timeout_s"] = a.client_timeout
    res["machine"] = system.machine()
    res["command"] = "python -m bench.load " + " ".join(shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv))
    res["when"] = time.strftime("%Y-%m-%d %H:%M:%S")
    print(save_outputs(res, a.out_dir, "load", write_markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
