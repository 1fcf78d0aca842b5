"""``benchmarks/gpu_check.py`` run on the CPU with a tiny architecture and gloo, so that the prepared GPU check
cannot rot between the sessions that have a GPU: every section must run and write the fields the GPU run reports.
One thread: on a shared machine a 2-thread OpenMP process can become many times slower."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO_ROOT


def test_gpu_check_runs_every_section_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    cmd = [sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny",
           "--backend", "gloo", "--batch", "4", "--steps", "1", "--warmup", "0", "--sample-batch", "4",
           "--sample-repeats", "1", "--k", "4", "--iw-batch", "2", "--iw-repeats", "1",
           "--depthwise-weight-grad", "native", "--threads", "1", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["tiny"] is True
    assert {"cpu_model", "vector_extensions", "native_bf16", "torch_threads"} <= set(report["machine"])
    sections = report["sections"]
    assert set(sections) == {"train", "sample", "iw", "ddp"}
    train = sections["train"]
    for precision in ("fp32", "bf16", "fp16"):
        result = train[precision]
        assert result["images_per_s"] > 0 and result["steps"] == 1 and "peak_cuda_gib" in result
    assert train["fp16"]["scaler_scale"] is not None and train["fp32"]["scaler_scale"] is None
    assert train["levers"]["channels_last"] is True
    sample = sections["sample"]
    assert sample["ms_per_image"] > 0 and sample["finite"] and sample["batch_size"] == 4
    iw = sections["iw"]
    assert iw["k"] == 4 and iw["batched"]["median_s"] > 0 and iw["sequential"]["median_s"] > 0
    # the same noise in the same order: batching the k samples changes only float rounding
    assert iw["nll_abs_difference"] <= 1e-4 * abs(iw["batched"]["nll_nats"])
    ddp = sections["ddp"]
    assert ddp["ok"] is True and ddp["backend"] == "gloo" and ddp["world_size"] == 1, ddp
    assert len(ddp["losses"]) == 3
