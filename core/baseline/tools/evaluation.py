"""``baseline eval``: loss, perplexity and bits per byte of a run on any text.

The run's own tokenizer and model (:func:`baseline.tools.inference.load_run`) score the text the way
the trainer scores its validation split: the text is cut into segments at the run's segment
delimiter (``end_of_segment_text``; whitespace-only segments are dropped, as ``local_text``
does), tokenized into one stream with an end-of-segment token after each segment
(:func:`baseline.data.tokens.build_token_stream`), and read in non-overlapping windows of the run's
``seq_len`` (:class:`baseline.data.windows.EvalWindows`). ``loss`` is the mean cross-entropy in nats
per scored token and ``bpb`` is ``loss / ln 2 * tokens / bytes``, where ``tokens`` counts every
token of the stream (end-of-segment tokens included) and ``bytes`` the UTF-8 bytes of the
segments plus, for each end-of-segment token, the bytes of the delimiter it stands for: the
definition of ``val_bpb``. The validation segments of a run, written to a file joined by its
delimiter, therefore score the run's final ``val_loss`` and ``val_bpb``. A run that did not
finish is scored with its newest checkpoint (:func:`baseline.tools.inference.load_run`), which
scores that step's ``val_loss``.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs

from baseline.errors import ConfigError, DataError
from baseline.runs.layout import RunDirectory

__all__ = ["EvalResult", "check_run_dir", "evaluate_run", "read_text_segments"]

#: Bytes inspected for NUL characters to tell binary files from text (as ``local_text``).
_BINARY_SNIFF_BYTES = 8192
DEVICES = ("auto", "cpu", "cuda", "mps")


@attrs.frozen(kw_only=True)
class EvalResult:
    """The figures of one evaluation and what they were measured on."""

    run_dir: str
    #: The text file, or the experiment file whose ``[dataset]`` was read.
    data: str
    segments: int
    #: Tokens of the stream, end-of-segment tokens included (the bits-per-byte numerator).
    tokens: int
    #: UTF-8 bytes of the segments plus the delimiter bytes (the bits-per-byte denominator).
    bytes: int
    windows: int
    #: Targets scored: ``windows * seq_len``.
    scored_tokens: int
    seq_len: int
    device: str
    loss: float
    perplexity: float
    bpb: float
    #: The step of the checkpoint scored (a run that did not finish); ``None``: the final model.
    checkpoint_step: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return attrs.asdict(self)

    def render(self) -> str:
        """Two lines for a person."""
        return (
            f"{self.run_dir} on {self.data}: loss {self.loss:.4f}  perplexity "
            f"{self.perplexity:.4f}  bits/byte {self.bpb:.4f}\n"
            f"  {self.segments:,} segments, {self.tokens:,} tokens, {self.bytes:,} bytes; "
            f"{self.windows:,} windows of {self.seq_len} tokens on {self.device}"
        )


def check_run_dir(run_dir: str | Path) -> Path:
    """A run directory with weights (finished, or stopped after a checkpoint), or a
    :class:`DataError` saying what is missing."""
    from baseline.tools.inference import open_run

    return open_run(run_dir).path


def read_text_segments(path: str | Path, delimiter: str) -> list[str]:
    """The non-blank segments of a UTF-8 file cut at ``delimiter`` (the whole text when it is
    empty); a missing, unreadable, binary, non-UTF-8 or blank file is a :class:`DataError`."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{file}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{file}: is a directory; give a text file") from None
    except OSError as error:
        raise DataError(f"{file}: cannot read ({error.strerror})") from None
    if b"\x00" in raw[:_BINARY_SNIFF_BYTES]:
        raise DataError(f"{file}: looks like a binary file, not text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{file}: is not valid UTF-8 (byte {error.start}); convert it, e.g. "
            "iconv -f latin1 -t utf-8"
        ) from None
    pieces = text.split(delimiter) if delimiter else [text]
    segments = [piece for piece in pieces if piece.strip()]
    if not segments:
        raise DataError(f"{file}: is empty or whitespace only; give a text to evaluate on")
    return segments


def _dataset_segments(experiment: str | Path) -> tuple[Iterable[str], str]:
    """The segments (lazily) and the delimiter of an experiment file's ``[dataset]`` (the
    rest of the file is not read); of a ``mixture``, every source's segments, source after
    source (the order of the run's token stream), and the first source's delimiter."""
    from baseline.config.mixture import MIXTURE_NAME
    from baseline.experiment.loading import read_toml

    table = read_toml(experiment).get("dataset")
    if not isinstance(table, dict) or not isinstance(table.get("name"), str):
        raise ConfigError("needs a [dataset] table with a name", key_path="dataset")
    if table["name"] != MIXTURE_NAME:
        return _one_dataset(table, "dataset", experiment)
    sources = table.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise ConfigError("a mixture needs [dataset.sources.<name>] tables", key_path="dataset")
    parts = []
    for name, source in sources.items():
        path = f"dataset.sources.{name}"
        if not isinstance(source, dict) or not isinstance(source.get("name"), str):
            raise ConfigError("needs a table with a name", key_path=path)
        fields = {k: v for k, v in source.items() if k not in ("weight", "split")}
        parts.append(_one_dataset(fields, path, experiment))
    return itertools.chain.from_iterable(p[0] for p in parts), parts[0][1]


def _one_dataset(
    table: dict[str, Any], key_path: str, experiment: str | Path
) -> tuple[Iterable[str], str]:
    from baseline.data.preparation import segment_delimiter
    from baseline.experiment.loading import resolve_paths, structure
    from baseline.plugins.calls import plugin_call, plugin_iter
    from baseline.plugins.discovery import default_plugins
    from baseline.plugins.output_checks import component_label

    try:
        component = default_plugins().registry.get("dataset", table["name"])
    except ConfigError as error:
        raise ConfigError(error.message, key_path=f"{key_path}.name") from None
    fields = {key: value for key, value in table.items() if key != "name"}
    dataset_config = structure(fields, component.config_cls, key_path)
    dataset_config = resolve_paths(dataset_config, Path(experiment).resolve().parent)
    label = component_label("dataset", component.name)
    with plugin_call(label):
        adapter = component.create(dataset_config)
    return _checked(plugin_iter(label, adapter.segments)), segment_delimiter(
        adapter, component.name
    )


def _checked(segments: Iterable[str]) -> Iterator[str]:
    for segment in segments:
        if not isinstance(segment, str):
            raise DataError(f"the dataset yielded a {type(segment).__name__}, not text")
        yield segment


def _run_settings(run_dir: Path) -> tuple[int | None, str]:
    """The run's validation batch size and precision (its run config), if recorded."""
    try:
        train = (RunDirectory(run_dir).read_run_config() or {})["config"]["train"]
    except (KeyError, TypeError):
        return None, "auto"
    batch = train.get("eval_batch_size") or train.get("batch_size")
    return (int(batch) if batch else None), str(train.get("precision", "auto"))


def evaluate_run(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    dataset: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
) -> EvalResult:
    """Score the run in ``run_dir`` (its final model, or its newest checkpoint when it did not
    finish) on the text file ``data`` (cut at the run's delimiter) or on every segment of the
    ``[dataset]`` of the experiment file ``dataset``."""
    if (data is None) == (dataset is None):
        raise ConfigError("give exactly one of a text file and an experiment's dataset")
    if device not in DEVICES:
        raise ConfigError(
            f"must be one of {', '.join(DEVICES)}, got {device!r}", key_path="--device"
        )
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"must be >= 1, got {batch_size}", key_path="--batch-size")
    from baseline.tools.inference import inference_info, open_run

    run_path = open_run(run_dir).path
    info = inference_info(RunDirectory.read(run_path))
    delimiter = str(info.get("end_of_segment_text", ""))
    label = str(data)
    segments: Iterable[str] = ()
    if data is not None:  # read (and refuse) the text before loading torch and the model
        segments = read_text_segments(data, delimiter)

    from baseline.tools.inference import load_run
    from baseline.train.device import select_device

    try:
        target = select_device(device)
    except ConfigError as error:
        raise ConfigError(error.message, key_path="--device") from None
    run = load_run(run_path)
    saved_batch, precision = _run_settings(run_path)
    try:
        if dataset is not None:  # its segments are read while they are tokenized
            segments, delimiter = _dataset_segments(dataset)
            label = f"[dataset] of {dataset}"
        with tempfile.TemporaryDirectory(prefix="baseline-eval-") as scratch:
            return _score(
                run,
                segments,
                delimiter,
                run_dir=str(run_dir),
                label=label,
                device=target,
                batch_size=batch_size or saved_batch or 32,
                precision=precision,
                scratch=Path(scratch),
            )
    except ConfigError as error:  # the experiment's [dataset]: name the file
        raise (error.with_source(str(dataset)) if dataset is not None else error) from None


def _score(
    run: Any,
    segments: Iterable[str],
    delimiter: str,
    *,
    run_dir: str,
    label: str,
    device: Any,
    batch_size: int,
    precision: str,
    scratch: Path,
) -> EvalResult:
    import contextlib

    from baseline.data.tokens import build_token_stream
    from baseline.data.windows import EvalWindows, window_loss_sum
    from baseline.train.device import autocast as autocast_as
    from baseline.train.precision import PrecisionPlan

    target = device
    stream = build_token_stream(segments, run.tokenizer, scratch)
    tokens = len(stream.tokens)
    text_bytes = int(stream.byte_counts.sum()) + stream.num_segments * len(
        delimiter.encode("utf-8")
    )
    windows = EvalWindows(stream.tokens, [(0, tokens)], seq_len=run.seq_len, batch_size=batch_size)
    if not windows.num_windows:
        raise DataError(
            f"{label}: {tokens:,} tokens, fewer than one window of seq_len + 1 = "
            f"{run.seq_len + 1} tokens; give a longer text"
        )
    model = run.model.to(target)
    model.eval()

    dtype = PrecisionPlan.decide(precision, "auto", target).autocast

    def autocast() -> contextlib.AbstractContextManager[Any]:
        return autocast_as(dtype, target)

    total, count = window_loss_sum(model, windows, target, autocast)
    loss = total.item() / count
    return EvalResult(
        run_dir=run_dir,
        data=label,
        segments=stream.num_segments,
        tokens=tokens,
        bytes=text_bytes,
        windows=windows.num_windows,
        scored_tokens=count,
        seq_len=run.seq_len,
        device=str(target),
        loss=loss,
        perplexity=math.exp(min(loss, 50.0)),
        bpb=loss / math.log(2) * tokens / max(1, text_bytes),
        checkpoint_step=run.checkpoint_step,
    )
