"""``benchmarks/gpu.py`` on a machine without CUDA: says so and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: run the benchmark")
def test_gpu_benchmark_without_cuda_exits_0() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no CUDA device: benchmarks/gpu.py needs a GPU")
