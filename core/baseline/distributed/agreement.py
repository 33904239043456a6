"""Ranks agreeing: on a flag (stop now), on a value (the mean loss) and on the parameters."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch

from baseline.distributed.context import DistributedContext


class RankAgreement:
    """Collectives that keep the ranks of one run in step (no-ops in a single process)."""

    def __init__(self, dist: DistributedContext, device: torch.device) -> None:
        self.dist = dist
        self.device = device

    def any(self, flag: bool) -> bool:
        """``flag`` on any rank is ``True`` on all: ranks stop at the same step."""
        if not self.dist.enabled:
            return flag
        import torch.distributed as dist

        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def mean(self, value: torch.Tensor) -> float:
        """``value`` averaged over ranks (each rank's loss covers its shard of the batch)."""
        if not self.dist.enabled:
            return float(value.item())
        import torch.distributed as dist

        reduced = value.detach().clone()
        dist.all_reduce(reduced)
        return float(reduced.item()) / self.dist.world_size

    def sum_with_count(self, total: torch.Tensor, count: int) -> tuple[torch.Tensor, int]:
        """A loss sum and its token count, summed over ranks."""
        if not self.dist.enabled:
            return total, count
        import torch.distributed as dist

        sums = torch.stack(
            [total, torch.tensor(float(count), dtype=torch.float64, device=self.device)]
        )
        dist.all_reduce(sums)
        return sums[0], int(sums[1].item())


def parameter_digest(state: Mapping[str, torch.Tensor]) -> str:
    """A hash of every tensor's bytes: equal on all ranks when DDP kept them in sync."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
