"""bench/engine.py: its counters count what they claim (they can fail), and the plain path reads the
device once per training step."""
from __future__ import annotations

import torch

from bench.engine import bench_engine, count_step
from bench.training import QUICK


def test_counters_see_host_reads_and_operator_calls():
    x = torch.randn(4, 3)

    def step(a):
        y = (a * 2).sum()  # 2 operator calls
        bool(y > 0)        # a scalar read (+1 call)
        a[a > 0].tolist()  # a data-dependent shape and a tolist
        return float(y)    # another scalar read

    c = count_step(step, (x,), torch.device("cpu"))
    assert c["sync_kinds"]["_local_scalar_dense"] == 2 and c["sync_kinds"]["tolist"] == 1
    assert c["syncs"] >= 4 and c["ops"] >= 5

    def quiet(a):
        return (a * 2).sum()
    assert count_step(quiet, (x,), torch.device("cpu"))["syncs"] == 0


def test_plain_training_step_reads_the_device_once():
    out = bench_engine(QUICK, device=torch.device("cpu"))
    assert out["train_host_syncs_per_step"] == 1  # the stats read for logging
    assert out["engine_paths"]["plain"]["sync_kinds"] == {"tolist": 1}
    assert out["train_ops_per_step"] > 100 and out["engine_paths"]["kernels"]["ops"] > 100
    assert out["engine_reference_tokens_per_s"] > 0
