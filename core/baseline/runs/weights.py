"""The trained weights of a run, for a plain (unsharded) model in one process.

A finished run gives its final model. A run that did not finish (stopped by Ctrl-C or
SIGTERM, or crashed after a checkpoint) gives the model of its newest usable checkpoint, of
either kind: a single file, or an FSDP run's sharded DCP directory, which DCP reads whole in
this process. Where the files are is :class:`baseline.runs.layout.RunDirectory`'s; this
module only loads them. ``baseline eval``, ``sample`` and ``export`` and ``run.init_from``
read weights here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from baseline.errors import BaselineError, DataError
from baseline.runs.layout import Checkpoint, RunDirectory

if TYPE_CHECKING:
    import torch

__all__ = ["RunWeights", "read_weights", "weight_problems"]

#: Builds the error for weights that do not fit the model: ``(path, problems)``.
Mismatch = Callable[[Path, list[str]], BaselineError]


@attrs.frozen
class RunWeights:
    """Weights read from a run directory."""

    path: Path
    state: dict[str, Any] = attrs.field(repr=False)
    #: The checkpoint they came from (``None``: the final model) and its step.
    checkpoint: Checkpoint | None = None
    step: int | None = None

    @property
    def note(self) -> str:
        """What a user is told about weights that are not the final model (else ``""``)."""
        if self.checkpoint is None:
            return ""
        return f"using the checkpoint at step {self.step} (the run did not finish)"


def weight_problems(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], where: str
) -> list[str]:
    """``key missing``, ``key unexpected`` and ``key (shape) in <where>, (shape) here``."""
    problems = [f"{key} missing" for key in sorted(set(expected) - set(found))]
    problems += [f"{key} unexpected" for key in sorted(set(found) - set(expected))]
    problems += [
        f"{key} {found[key]} in {where}, {shape} here"
        for key, shape in expected.items()
        if key in found and found[key] != shape
    ]
    return problems


def read_weights(
    run: RunDirectory,
    template: Mapping[str, torch.Tensor],
    mismatch: Mismatch,
    *,
    where: str = "the weights",
) -> RunWeights:
    """The weights of ``run`` for a model whose state dict is ``template``: the final model
    of a finished run, else the newest usable checkpoint's model. Weights whose tensors do not
    fit ``template`` raise ``mismatch(path, problems)``."""
    import torch

    from baseline.runs.sharded_checkpoint import (
        load_model_weights,
        model_shapes,
        read_trainer_state,
    )

    expected = {key: tuple(value.shape) for key, value in template.items()}

    def check(path: Path, state: Mapping[str, Any]) -> None:
        problems = weight_problems(expected, state, where)
        if problems:
            raise mismatch(path, problems)

    if run.finished:
        path = run.final_model
        try:
            final: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise DataError(
                f"{path}: cannot load the final model ({type(error).__name__})"
            ) from None
        check(path, {key: tuple(value.shape) for key, value in final.items()})
        return RunWeights(path, final)
    found = run.find_checkpoint(read_trainer_state)
    if found is None:
        raise DataError(
            f"{run.path} has no weights: neither a final model ({run.final_model.name}) nor a "
            f"checkpoint ({run.checkpoint_paths(bool(run.sharded))[0].name}); train it first, "
            "or give another run"
        )
    checkpoint, saved = found
    step = saved.get("step")
    if checkpoint.sharded:
        check(checkpoint.path, model_shapes(checkpoint.path))
        state = load_model_weights(checkpoint.path, dict(template))
    else:
        state = saved["model"]
        check(checkpoint.path, {key: tuple(value.shape) for key, value in state.items()})
    return RunWeights(checkpoint.path, state, checkpoint, int(step) if step is not None else None)
