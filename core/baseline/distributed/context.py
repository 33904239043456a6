"""Multi-process training with ``torch.distributed`` (DDP), launched by ``torchrun``.

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; with more than one process the
process group is initialised with gloo on CPU or nccl on CUDA. Rank 0 alone writes files and
runs loggers; the other ranks wait at barriers. Work that may fail on rank 0 (creating the
run directory, training the tokenizer) is run through :meth:`DistributedContext.on_main` so
that its error reaches every rank instead of leaving them waiting.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import attrs

from baseline.errors import BaselineError, ConfigError

T = TypeVar("T")

#: Set on an error that every rank raised at the same step (an agreed stop).
_EVERY_RANK = "_baseline_every_rank"
#: The longest a rank waits for the others to finish their cleanup after such an error.
PARTING_TIMEOUT_S = 120.0


E = TypeVar("E", bound=BaselineError)


def on_every_rank(error: E) -> E:
    """``error``, marked as one that every rank raises at this point (after the ranks agreed
    to stop): they then part together (:meth:`DistributedContext.part`)."""
    setattr(error, _EVERY_RANK, True)
    return error


@contextlib.contextmanager
def raised_on_every_rank() -> Iterator[None]:
    """:func:`on_every_rank` for the :class:`BaselineError` raised inside."""
    try:
        yield
    except BaselineError as error:
        on_every_rank(error)
        raise


def is_raised_on_every_rank(error: BaseException) -> bool:
    """Whether ``error`` was raised inside :func:`raised_on_every_rank`."""
    return bool(getattr(error, _EVERY_RANK, False))


class RemoteError(BaselineError):
    """An error raised on rank 0, re-raised on the other ranks with the same message."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@attrs.frozen
class DistributedContext:
    """This process's place in the job; ``world_size == 1`` is a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    #: A one-process group this process created itself (FSDP without torchrun).
    own_group: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that writes files and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def on_main(self, work: Callable[[], T]) -> T:
        """Run ``work`` on rank 0 and give its (picklable) result to every rank; when it
        fails there, every rank raises."""
        if not self.enabled:
            return work()
        import torch.distributed as dist

        outcome: list[Any] = [None]
        if self.is_main:
            try:
                outcome = [("ok", work())]
            except BaselineError as error:
                dist.broadcast_object_list([("error", (str(error), error.exit_code))], src=0)
                raise
            except BaseException as error:
                message = f"rank 0 failed: {type(error).__name__}: {error}"
                dist.broadcast_object_list([("error", (message, 1))], src=0)
                raise
        dist.broadcast_object_list(outcome, src=0)
        status, value = outcome[0]
        if status == "error":
            raise RemoteError(*value)
        result: T = value
        return result

    def part(self, timeout_s: float = PARTING_TIMEOUT_S) -> None:
        """After an error every rank raised at the same step: wait until every rank has done
        its cleanup (rank 0 finishes its loggers and writes ``run_config.json``). torchrun
        stops every worker as soon as one exits with an error, so a rank that exits first
        would cut rank 0's cleanup short. The wait is bounded; a rank that does not come is
        not waited for any longer."""
        if not self.enabled:
            return
        import datetime

        import torch.distributed as dist

        timeout = datetime.timedelta(seconds=timeout_s)
        with contextlib.suppress(Exception):  # a rank already gone: nothing to wait for
            if self.backend == "gloo":
                dist.monitored_barrier(timeout=timeout)
            else:
                dist.barrier()

    def shutdown(self) -> None:
        """Destroy the process group, so that gloo's threads stop before the process exits
        (exiting with them alive can abort the process)."""
        if not self.enabled and not self.own_group:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (picklable objects)."""
        if not self.enabled:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered


def init_distributed(requested_device: str, parallelism: str = "ddp") -> DistributedContext:
    """Join the ``torchrun`` job described by the environment (no-op for one process, except
    that FSDP, ``parallelism = "fsdp"``, gets a one-process group of its own)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and parallelism != "fsdp":
        return DistributedContext()
    import torch
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() and requested_device in ("auto", "cuda")
    backend = "nccl" if use_cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if world_size <= 1:
        if dist.is_initialized():  # the caller's own group: used, not destroyed
            return DistributedContext(dist.get_rank(), dist.get_world_size(), 0, backend)
        store = dist.HashStore()  # type: ignore[attr-defined]
        dist.init_process_group(backend, store=store, rank=0, world_size=1)
        return DistributedContext(0, 1, 0, backend, own_group=True)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, backend)


def check_divisible(batch_size: int, world_size: int) -> int:
    """Per-rank batch size; ``train.batch_size`` is the global batch and must divide evenly."""
    if batch_size % world_size:
        raise ConfigError(
            f"the global batch of {batch_size} windows does not split evenly over "
            f"{world_size} processes; use a multiple of {world_size}",
            key_path="train.batch_size",
        )
    return batch_size // world_size
