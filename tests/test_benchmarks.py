"""The benchmark scripts run (tiny settings) and print the JSON they promise; benchmarks/gpu.py
needs nothing but torch (the GPU machine lacks omegaconf, albumentations, wandb, pydensecrf)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Run a script with some top-level packages made unimportable, as on the GPU machine.
BLOCKING_RUNNER = """
import importlib.abc, runpy, sys
blocked = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not installed here")
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run(args: list[str], blocked: str = "") -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", BLOCKING_RUNNER, blocked, *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout[out.stdout.index("{"):])


@pytest.mark.slow
def test_gpu_script_runs_on_cpu_with_torch_alone():
    report = _run(["benchmarks/gpu.py", "--device", "cpu", "--tiny"],
                  blocked="omegaconf,albumentations,wandb,pydensecrf,lightning")
    assert report["settings"]["tiny"] and report["device"]
    assert len(report["train"]) == 4 and all(entry["windows_per_s"] > 0 for entry in report["train"])
    assert {(e["precision"], e["channels_last"]) for e in report["train"]} == {
        ("fp32", False), ("fp32", True), ("bf16-mixed", False), ("bf16-mixed", True)}
    assert report["device_windows"]["windows_per_s"] > 0
    assert report["eval_windows"]["fp32"]["windows_per_s"] > 0
    assert 0 <= report["bf16_logit_error"]["bf16"]["relative_l2"] < 10
    assert "skipped" in report["crf"]  # pydensecrf blocked: reported, not a crash


@pytest.mark.slow
def test_data_benchmark_reports_every_pipeline():
    report = _run(["benchmarks/data.py", "--images", "6", "--examples", "8", "--repeats", "1"])
    for stage in ("stage1", "stage2_proposals"):
        rates = report[stage]
        for name in ("torchvision_baseline", "decode", "store_workers", "store_device"):
            assert rates[name] > 0
        assert set(rates["ratio_to_baseline"]) == {"decode", "store_workers", "store_device"}
