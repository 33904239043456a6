"""The dtype each reduced-precision path of a run computes in, decided once at start.

bf16 is fast only where the hardware has it: a CUDA GPU with bf16 units, or a CPU whose
kernels use AVX512-BF16 or AMX. Elsewhere every bf16 matmul is emulated: on a CPU without
them, Muon's Newton-Schulz iterations in bf16 take about 40 times as long as in float32
(``benchmarks/muon_step.py`` measures both). So ``auto`` picks bf16 only on such hardware, and
the run states its choice and the reason in its log and in ``run_config.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import attrs
import torch

Dtype = Literal["fp32", "bf16"]
TORCH_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and what that was decided from.

    On a CPU, the kernels PyTorch dispatches to (``torch.backends.cpu.get_cpu_capability``,
    which ``ATEN_CPU_CAPABILITY=avx2`` lowers) must be AVX-512 and the CPU must have
    AVX512-BF16 or AMX tiles.
    """
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return native, f"CUDA {torch.cuda.get_device_name(device)}"
    if device.type != "cpu":
        return False, f"{device.type}: bf16 not assumed fast"
    kernels = torch.backends.cpu.get_cpu_capability()
    avx512_bf16 = torch.cpu._is_avx512_bf16_supported()
    amx = torch.cpu._is_amx_tile_supported()
    native = kernels.startswith("AVX512") and (avx512_bf16 or amx)
    return native, (
        f"CPU kernels {kernels}, AVX512-BF16 {'yes' if avx512_bf16 else 'no'}, "
        f"AMX {'yes' if amx else 'no'}"
    )


@attrs.frozen
class PrecisionPlan:
    """The dtypes of one run: its matmuls under autocast and Muon's Newton-Schulz iterations.

    ``auto`` settings resolve here, once: matmuls in bf16 on a GPU with native bf16 (on a CPU
    they stay float32: bf16 autocast measured no faster for small models, and it costs
    accuracy), Newton-Schulz in bf16 wherever bf16 is native, float32 elsewhere.
    """

    autocast: Dtype
    newton_schulz: Dtype
    native_bf16: bool
    hardware: str
    requested: tuple[str, str]

    @classmethod
    def decide(
        cls,
        precision: str,
        optimizer_precision: str,
        device: torch.device,
        on_every_rank: Callable[[bool], bool] = lambda native: native,
    ) -> PrecisionPlan:
        """Resolve ``train.precision`` and ``train.optimizer_precision`` for ``device``.

        ``on_every_rank`` turns this rank's "bf16 is native" into whether it is native on
        every rank of the run: ranks on different machines must step the same way.
        """
        native, hardware = native_bf16(device)
        if not on_every_rank(native):
            native, hardware = False, f"{hardware}; another rank lacks native bf16"
        autocast: Dtype = "bf16" if native and device.type == "cuda" else "fp32"
        newton_schulz: Dtype = "bf16" if native else "fp32"
        return cls(
            autocast=autocast if precision == "auto" else _dtype(precision),
            newton_schulz=newton_schulz
            if optimizer_precision == "auto"
            else _dtype(optimizer_precision),
            native_bf16=native,
            hardware=hardware,
            requested=(precision, optimizer_precision),
        )

    @property
    def newton_schulz_dtype(self) -> torch.dtype:
        """The torch dtype of the Newton-Schulz iterations."""
        return TORCH_DTYPES[self.newton_schulz]

    def describe(self) -> str:
        """One log line: the choices, what they were decided from and how to override them."""
        precision, optimizer_precision = self.requested
        return (
            f"precision: matmuls {self.autocast} (train.precision = {precision!r}), "
            f"Newton-Schulz {self.newton_schulz} (train.optimizer_precision = "
            f"{optimizer_precision!r}); native bf16 {'yes' if self.native_bf16 else 'no'} "
            f"({self.hardware})"
        )

    def record(self) -> dict[str, Any]:
        """What ``run_config.json`` keeps under ``precision``."""
        return {
            "autocast": self.autocast,
            "newton_schulz": self.newton_schulz,
            "native_bf16": self.native_bf16,
            "hardware": self.hardware,
        }


def _dtype(setting: str) -> Dtype:
    if setting not in TORCH_DTYPES:
        raise ValueError(f"unknown precision {setting!r}")
    return "bf16" if setting == "bf16" else "fp32"
