"""Components for real runs that need nothing but the core: a plugin's tests train through them
when the standard plugins (``local_text``, ``bpe``, ``baseline_decoder``, ``holdout``) are not
installed, as in CI's ``nox -s plugin`` session.

:class:`ContractPlugin` registers dataset ``contract_text`` (segments of a text file, blank
line separated), tokenizer ``contract_bytes`` (UTF-8 bytes), model ``contract_decoder`` (a
small real causal transformer supporting every model diagnostic), split ``contract_every_nth``
(every n-th segment is a validation segment) and logger ``contract_fault`` (stops or crashes
its own run at a chosen step). :func:`contract_experiment_data` is a run of a few seconds
through them.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs
import numpy as np

from baseline.config import (
    MODEL_DIAGNOSTICS,
    DatasetConfig,
    LoggerConfig,
    ModelConfig,
    SplitConfig,
    TokenizerConfig,
    at_least,
    path_field,
)
from baseline.plugins.hookspecs import Register, hookimpl
from baseline.plugins.protocols import FitSource, MetricRecord, RunInfo, SplitPlan

if TYPE_CHECKING:
    import torch

__all__ = [
    "ContractBytes",
    "ContractBytesConfig",
    "ContractDecoder",
    "ContractDecoderConfig",
    "ContractEveryNth",
    "ContractEveryNthConfig",
    "ContractFault",
    "ContractFaultConfig",
    "ContractPlugin",
    "ContractText",
    "ContractTextConfig",
    "contract_experiment_data",
    "write_experiment",
]

#: The corpus of :func:`contract_experiment_data`: 40 short segments.
CORPUS = "\n\n".join(
    f"{line} {i}"
    for i in range(10)
    for line in (
        "ROMEO: But, soft! what light through yonder window breaks?",
        "JULIET: O Romeo, Romeo! wherefore art thou Romeo?",
        "accents: café naïve façade",
        "tabs\tand spaces  and 日本語",
    )
)


@attrs.frozen(kw_only=True)
class ContractTextConfig(DatasetConfig):
    """Dataset ``contract_text``: the blank-line separated segments of a UTF-8 file."""

    path: str = path_field()


class ContractText:
    """The non-blank segments of ``path`` split at blank lines, in file order."""

    segment_delimiter = "\n\n"

    def __init__(self, config: ContractTextConfig) -> None:
        self.config = config

    def segments(self) -> Iterator[str]:
        """Every non-blank segment."""
        text = Path(self.config.path).read_text(encoding="utf-8")
        yield from (segment for segment in text.split("\n\n") if segment.strip())


@attrs.frozen(kw_only=True)
class ContractBytesConfig(TokenizerConfig):
    """Tokenizer ``contract_bytes``: UTF-8 bytes as ids 0-255, end of segment 256."""


class ContractBytes:
    """A byte-level tokenizer: nothing to learn, nothing to load."""

    vocab_size = 257
    end_of_segment_id = 256

    def __init__(self, config: ContractBytesConfig) -> None:
        self.config = config

    def fit(self, texts: Iterator[str], source: FitSource) -> None:
        """Nothing to learn."""

    def load(self, path: Path) -> None:
        """Nothing to load: the encoding is fixed."""

    def save(self, directory: Path) -> str:
        """Write a marker file (the encoding needs no state)."""
        (directory / "contract_bytes.json").write_text("{}\n", encoding="utf-8")
        return "contract_bytes.json"

    def fingerprint(self) -> str:
        """Constant: the encoding never changes."""
        return "contract-bytes-1"

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """UTF-8 bytes of each text."""
        return [list(text.encode("utf-8")) for text in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the byte ids; the end-of-segment id is dropped."""
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


@attrs.frozen(kw_only=True)
class ContractDecoderConfig(ModelConfig):
    """Model ``contract_decoder``: a pre-norm causal transformer with tied embeddings."""

    d_model: int = attrs.field(default=32, validator=at_least(1))
    n_heads: int = attrs.field(default=2, validator=at_least(1))
    layers: int = attrs.field(default=2, validator=at_least(1))


class ContractDecoder:
    """Builds the decoder; its modules support every model diagnostic."""

    diagnostics = frozenset(MODEL_DIAGNOSTICS)

    def __init__(self, config: ContractDecoderConfig) -> None:
        self.config = config

    def build(self, vocab_size: int, seq_len: int) -> torch.nn.Module:
        """A fresh module for ``vocab_size`` ids and ``seq_len`` positions."""
        from baseline.testing._decoder import ContractDecoderModule

        config = self.config
        return ContractDecoderModule(
            vocab_size, seq_len, config.d_model, config.n_heads, config.layers
        )


@attrs.frozen(kw_only=True)
class ContractEveryNthConfig(SplitConfig):
    """Split ``contract_every_nth``: segment ``i`` is for validation when ``i % every`` is
    ``every - 1``."""

    every: int = attrs.field(default=5, validator=at_least(2))


class ContractEveryNth:
    """Every ``every``-th segment for validation, the others for training."""

    def __init__(self, config: ContractEveryNthConfig) -> None:
        self.config = config

    def split(self, segment_byte_counts: np.ndarray) -> SplitPlan:
        """Deterministic by position."""
        indices = np.arange(len(segment_byte_counts), dtype=np.int64)
        validation = indices % self.config.every == self.config.every - 1
        return SplitPlan(train=indices[~validation], validation=indices[validation])


@attrs.frozen(kw_only=True)
class ContractFaultConfig(LoggerConfig):
    """Logger ``contract_fault``: stops or crashes its own run at one step."""

    #: The step whose train record triggers the fault (-1: never).
    step: int = -1
    #: ``sigterm`` (a graceful stop, exit status 143) or ``raise`` (a crash, exit status 1).
    action: Literal["sigterm", "raise"] = "sigterm"


class ContractFault:
    """List it after the logger under test: that one has logged the step when this one acts."""

    def __init__(self, config: ContractFaultConfig) -> None:
        self.config = config

    def start(self, run: RunInfo) -> ContractFault:
        """One object is adapter and session."""
        return self

    def log(self, record: MetricRecord) -> None:
        """Act on the chosen step's train record."""
        if record.phase == "train" and record.step == self.config.step:
            if self.config.action == "raise":
                raise RuntimeError("contract_fault: the run fails here on purpose")
            os.kill(os.getpid(), signal.SIGTERM)

    def finish(self, exit_code: int) -> None:
        """Nothing to close."""


class ContractPlugin:
    """Registers the ``contract_*`` components (pass it to
    :func:`~baseline.testing.in_process_plugins` or :func:`~baseline.testing.using_plugins`)."""

    @staticmethod
    @hookimpl
    def baseline_register_datasets(register: Register) -> None:
        """Dataset ``contract_text``."""
        register("contract_text", ContractTextConfig, ContractText)

    @staticmethod
    @hookimpl
    def baseline_register_tokenizers(register: Register) -> None:
        """Tokenizer ``contract_bytes``."""
        register("contract_bytes", ContractBytesConfig, ContractBytes)

    @staticmethod
    @hookimpl
    def baseline_register_models(register: Register) -> None:
        """Model ``contract_decoder``."""
        register("contract_decoder", ContractDecoderConfig, ContractDecoder)

    @staticmethod
    @hookimpl
    def baseline_register_splits(register: Register) -> None:
        """Split ``contract_every_nth``."""
        register("contract_every_nth", ContractEveryNthConfig, ContractEveryNth)

    @staticmethod
    @hookimpl
    def baseline_register_loggers(register: Register) -> None:
        """Logger ``contract_fault``."""
        register("contract_fault", ContractFaultConfig, ContractFault)


def contract_experiment_data(workdir: str | Path, **logging: Any) -> dict[str, Any]:
    """Experiment data (as parsed TOML) for a run of a few seconds through :class:`ContractPlugin`'s
    components: 2 epochs of 11 steps (batch 8, seq_len 16), a checkpoint every 5 steps.

    ``workdir`` (created if missing) receives ``corpus.txt`` and the artifacts (``runs/``, run
    name ``tiny``, project ``test``); ``logging`` are the ``[logging]`` keys (default: the
    ``console`` logger every 2 steps).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = workdir / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    return {
        "run": {
            "project_name": "test",
            "artifacts_root": str(workdir / "runs"),
            "run_name": "tiny",
            "checkpoint_every_n_steps": 5,
            "seed": 7,
        },
        "dataset": {"name": "contract_text", "path": str(corpus)},
        "tokenizer": {"name": "contract_bytes"},
        "model": {"name": "contract_decoder"},
        "train": {
            "epochs": 2,
            "learning_rate": 3e-3,
            "batch_size": 8,
            "seq_len": 16,
            "warmup_steps": 2,
            "num_threads": 1,
        },
        "split": {"name": "contract_every_nth"},
        "logging": {"provider": "console", "log_every_n_steps": 2, **logging},
    }


def write_experiment(path: Path, data: dict[str, Any]) -> Path:
    """Write experiment data as TOML (tables of strings, numbers, booleans and lists)."""
    lines: list[str] = []

    def table(prefix: str, content: dict[str, Any]) -> None:
        if prefix:
            lines.append(f"[{prefix}]")
        for key, value in content.items():
            if not isinstance(value, dict):
                lines.append(f"{key} = {json.dumps(value)}")  # JSON scalars and arrays are TOML
        for key, value in content.items():
            if isinstance(value, dict):
                table(f"{prefix}.{key}" if prefix else key, value)

    table("", data)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
