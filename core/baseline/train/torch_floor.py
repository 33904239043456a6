"""The oldest torch the training loop runs on, checked before the loop's modules import it.

``torch.optim.Muon`` (the base of :class:`~baseline.train.muon.BatchedMuon`) arrived in torch
2.9; FSDP2 (``fully_shard``) and the DCP state-dict helpers are older. The core declares
``torch>=2.9`` and a run on an older torch (installed with ``--no-deps``, say) stops with one
line instead of an ``ImportError`` from inside the optimizer module.
"""

from __future__ import annotations

from packaging.version import Version

from baseline.errors import BaselineError

#: Keep in step with the ``torch`` requirement in the core's pyproject.toml (a test checks).
TORCH_FLOOR = "2.9"


class TorchTooOld(BaselineError):
    """The installed torch is older than :data:`TORCH_FLOOR`."""


def check_torch(version: str | None = None) -> None:
    """Raise :class:`TorchTooOld` when ``version`` (default: the installed torch's) is older
    than the floor."""
    if version is None:
        import torch

        version = str(torch.__version__)
    if Version(version).release < Version(TORCH_FLOOR).release:
        raise TorchTooOld(
            f"torch {version} is installed; baseline trains with torch>={TORCH_FLOOR} "
            f"(Muon, FSDP2): pip install -c constraints.txt 'torch>={TORCH_FLOOR}'"
        )
