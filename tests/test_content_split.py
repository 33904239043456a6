"""Splits of protocol 2 see the segments themselves (text and source), recorded in the one
measuring pass: a split by content or by source file trains end to end, nothing it holds out
reaches the tokenizer, older splits still get the sizes, and memory stays bounded."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

pytest.importorskip("baseline_text")
pytest.importorskip("baseline_bpe")

from baseline.config import SplitConfig
from baseline.data.preparation import measure
from baseline.errors import PluginError
from baseline.experiment.loading import experiment_from_data
from baseline.pipeline import model_pipeline
from baseline.plugins.components import Components
from baseline.plugins.hookspecs import Register, hookimpl
from baseline.plugins.protocols import Segments, SplitPlan
from baseline.testing import (
    RecordingTokenizerPlugin,
    check_split_adapter,
    in_process_plugins,
    read_fit_recording,
    tiny_experiment_data,
)
from baseline_text import LocalTextDataset, LocalTextDatasetConfig

WORDS = [
    "thou",
    "art",
    "more",
    "lovely",
    "and",
    "temperate",
    "rough",
    "winds",
    "do",
    "shake",
    "the",
    "darling",
    "buds",
]
#: Only in held-out segments, and often enough that BPE would learn it from them.
PROBE = "qzvxk"


def plan_from_mask(validation: np.ndarray) -> SplitPlan:
    indices = np.arange(len(validation), dtype=np.int64)
    return SplitPlan(train=indices[~validation], validation=indices[validation])


@attrs.frozen(kw_only=True)
class RegexSplitConfig(SplitConfig):
    """Split ``regex``: a segment whose text matches ``pattern`` validates."""

    pattern: str


class RegexSplit:
    split_protocol = 2

    def __init__(self, config: RegexSplitConfig) -> None:
        self.config = config

    def split(self, segments: Segments) -> SplitPlan:
        pattern = re.compile(self.config.pattern)
        matches = (pattern.search(text) is not None for _, text, _ in segments)
        return plan_from_mask(np.fromiter(matches, dtype=bool, count=len(segments)))


@attrs.frozen(kw_only=True)
class SourceSplitConfig(SplitConfig):
    """Split ``by_source``: the segments of the files named in ``validation`` validate."""

    validation: tuple[str, ...]


class SourceSplit:
    split_protocol = 2
    seen: list[str] = []  # noqa: RUF012 (the test reads what the last split saw)

    def __init__(self, config: SourceSplitConfig) -> None:
        self.config = config

    def split(self, segments: Segments) -> SplitPlan:
        sources = [segments.source(i) for i in range(len(segments))]
        SourceSplit.seen = sources
        return plan_from_mask(np.array([s in self.config.validation for s in sources]))


@attrs.frozen(kw_only=True)
class SizesSplitConfig(SplitConfig):
    """Split ``sizes_every_third``, written against protocol 1 (no ``split_protocol``)."""


class SizesSplit:
    received: list[Any] = []  # noqa: RUF012

    def __init__(self, config: SizesSplitConfig) -> None:
        self.config = config

    def split(self, segment_byte_counts: np.ndarray) -> SplitPlan:
        SizesSplit.received.append(segment_byte_counts)
        return plan_from_mask(np.arange(len(segment_byte_counts)) % 3 == 2)


class ContentSplits:
    @staticmethod
    @hookimpl
    def baseline_register_splits(register: Register) -> None:
        register("regex", RegexSplitConfig, RegexSplit)
        register("by_source", SourceSplitConfig, SourceSplit)
        register("sizes_every_third", SizesSplitConfig, SizesSplit)


def corpus(count: int = 200, seed: int = 0) -> list[str]:
    """Segments of common words; every seventh is held out (``HELDOUT``) and repeats PROBE."""
    rng = np.random.default_rng(seed)
    segments = []
    for index in range(count):
        words = " ".join(rng.choice(WORDS, size=int(rng.integers(4, 30))))
        if index % 7 == 3:
            words = f"HELDOUT {words} " + " ".join([PROBE] * 12)
        segments.append(f"{index}: {words}")
    return segments


def learned_words(vocab_path: Path) -> set[str]:
    """The BPE vocabulary's entries as text (byte-level ``Ġ`` is a space)."""
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))["model"]["vocab"]
    return {token.replace("\u0120", " ").strip() for token in vocab}


@pytest.mark.parametrize("pattern", ["HELDOUT", r"^1\d: "], ids=["held-out", "control"])
def test_a_regex_split_trains_and_its_held_out_words_never_become_tokens(
    tmp_path: Path, pattern: str
) -> None:
    segments = corpus()
    data = tiny_experiment_data(tmp_path, corpus="\n\n".join(segments))
    data["split"] = {"name": "regex", "pattern": pattern}
    data["train"].update(max_steps=2, batch_size=4)
    plugins = in_process_plugins(ContentSplits)
    result = model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)
    held_out = [s for s in segments if re.search(pattern, s)]
    run_data = json.loads((result.run_dir / "run_config.json").read_text())["data"]
    assert run_data["validation_segments"] == len(held_out)
    learned = learned_words(Path(data["tokenizer"]["vocab_path"]))
    if pattern == "HELDOUT":
        assert PROBE not in learned and "HELDOUT" not in learned
    else:  # the probe would notice a leak: trained on, the word becomes a token
        assert PROBE in learned


def test_a_regex_split_fits_the_tokenizer_on_exactly_the_other_segments(tmp_path: Path) -> None:
    segments = corpus()
    data = tiny_experiment_data(tmp_path, corpus="\n\n".join(segments))
    data["tokenizer"] = {"name": "recording", "record_path": str(tmp_path / "fit.jsonl")}
    data["split"] = {"name": "regex", "pattern": "HELDOUT"}
    data["train"].update(max_steps=2, batch_size=4)
    plugins = in_process_plugins(ContentSplits, RecordingTokenizerPlugin)
    model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)
    [received] = read_fit_recording(tmp_path / "fit.jsonl").values()
    assert received == [s for s in segments if "HELDOUT" not in s]


def test_a_split_by_source_file_on_a_directory_corpus(tmp_path: Path) -> None:
    files = {
        "a.txt": corpus(60, seed=1),
        "b.txt": corpus(60, seed=2),
        "sub/c.txt": corpus(40, seed=3),
        ".hidden.txt": ["never read"],
    }
    root = tmp_path / "texts"
    for name, segments in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("\n\n".join(segments), encoding="utf-8")
    data = tiny_experiment_data(tmp_path)
    data["dataset"]["path"] = str(root)
    data["tokenizer"] = {"name": "recording", "record_path": str(tmp_path / "fit.jsonl")}
    data["split"] = {"name": "by_source", "validation": ["sub/c.txt"]}
    data["train"].update(max_steps=2, batch_size=4)
    plugins = in_process_plugins(ContentSplits, RecordingTokenizerPlugin)
    result = model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)
    assert SourceSplit.seen == ["a.txt"] * 60 + ["b.txt"] * 60 + ["sub/c.txt"] * 40
    [received] = read_fit_recording(tmp_path / "fit.jsonl").values()
    assert received == files["a.txt"] + files["b.txt"]
    run_data = json.loads((result.run_dir / "run_config.json").read_text())["data"]
    assert (run_data["train_segments"], run_data["validation_segments"]) == (120, 40)


def test_local_text_names_each_segments_file(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("a\n\n\n\n  \n\nb", encoding="utf-8")
    (tmp_path / "two.txt").write_text("c", encoding="utf-8")
    dataset = LocalTextDataset(LocalTextDatasetConfig(path=str(tmp_path / "*.txt")))
    pairs = list(dataset.segments_with_sources())
    assert [text for text, _ in pairs] == list(dataset.segments()) == ["a", "b", "c"]
    assert [Path(source).name for _, source in pairs] == ["one.txt", "one.txt", "two.txt"]


def test_a_split_written_against_protocol_1_still_gets_the_sizes(tmp_path: Path) -> None:
    segments = corpus()
    data = tiny_experiment_data(tmp_path, corpus="\n\n".join(segments))
    data["split"] = {"name": "sizes_every_third"}
    data["train"].update(max_steps=2, batch_size=4)
    plugins = in_process_plugins(ContentSplits)
    SizesSplit.received.clear()
    result = model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)
    [sizes] = SizesSplit.received
    assert isinstance(sizes, np.ndarray)
    assert sizes.tolist() == [len(s.encode()) for s in segments]
    run_data = json.loads((result.run_dir / "run_config.json").read_text())["data"]
    assert run_data["validation_segments"] == len(segments) // 3


def test_the_contract_check_gives_each_protocol_its_input() -> None:
    texts = ["alpha", "HELDOUT beta", "gamma", "HELDOUT delta"]
    plan = check_split_adapter(RegexSplit(RegexSplitConfig(pattern="HELDOUT")), texts)
    assert plan.validation.tolist() == [1, 3]
    pairs = [(t, f"f{i % 2}") for i, t in enumerate(texts)]
    plan = check_split_adapter(SourceSplit(SourceSplitConfig(validation=("f0",))), pairs)
    assert plan.validation.tolist() == [0, 2]
    plan = check_split_adapter(SizesSplit(SizesSplitConfig()), texts)
    assert plan.validation.tolist() == [2]
    with pytest.raises(AssertionError, match="needs texts"):
        check_split_adapter(RegexSplit(RegexSplitConfig(pattern="x")), [3, 4])


def test_an_unknown_split_protocol_is_refused(tmp_path: Path) -> None:
    class Future(RegexSplit):
        split_protocol = 3

    dataset = LocalTextDataset(LocalTextDatasetConfig(path=str(tmp_path / "c.txt")))
    (tmp_path / "c.txt").write_text("a\n\nb", encoding="utf-8")
    split = Future(RegexSplitConfig(pattern="a"))
    components = Components(dataset=dataset, tokenizer=None, model=None, split=split)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="split_protocol must be 1"):
        measure(None, components, tmp_path)  # type: ignore[arg-type]


#: Measures a streamed corpus of ``megabytes`` and runs a regex split over it, in a fresh
#: process; prints the peak RSS in MiB.
MEMORY_PROBE = textwrap.dedent(
    """
    import re, resource, sys
    from pathlib import Path
    import numpy as np
    from baseline.data.preparation import measure
    from baseline.plugins.components import Components

    corpus, scratch, pattern = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

    class Streamed:  # one line a segment, read lazily: the dataset holds nothing
        segment_delimiter = "\\n"
        def segments(self):
            with corpus.open(encoding="utf-8") as lines:
                for line in lines:
                    yield line.rstrip("\\n")
        def segments_with_sources(self):
            for index, text in enumerate(self.segments()):
                yield text, f"part-{index // 1000}"

    class Split:  # a regex split, as in the tests above
        split_protocol = 2
        def split(self, segments):
            rx = re.compile(pattern)
            return np.fromiter(
                (rx.search(t) is not None for _, t, _ in segments), bool, len(segments)
            )

    split = Split()
    components = Components(dataset=Streamed(), tokenizer=None, model=None, split=split)
    store = measure(None, components, scratch)
    validation = split.split(store)
    last = len(store) - 1
    with corpus.open("rb") as tail:
        tail.seek(-8192, 2)
        assert store.text(last) == tail.read().decode().rsplit("\\n", 2)[-2]
    assert store.source(last) == f"part-{last // 1000}"
    print(len(store), int(validation.sum()))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """
)


def write_corpus(path: Path, megabytes: int) -> int:
    """Lines of about 1 KB, every 50th holding ``MARK``; returns the line count."""
    rng = np.random.default_rng(0)
    block = [" ".join(rng.choice(WORDS, size=170)) for _ in range(100)]
    lines = 0
    with path.open("w", encoding="utf-8") as out:
        while out.tell() < megabytes << 20:
            out.write(
                "".join(
                    f"{lines + i} {'MARK ' if i % 50 == 0 else ''}{b}\n"
                    for i, b in enumerate(block)
                )
            )
            lines += len(block)
    return lines


def test_memory_stays_bounded_as_a_streamed_corpus_grows(tmp_path: Path) -> None:
    peaks = {}
    for megabytes in (16, 256):
        corpus_path = tmp_path / f"corpus-{megabytes}.txt"
        lines = write_corpus(corpus_path, megabytes)
        scratch = tmp_path / f"scratch-{megabytes}"
        scratch.mkdir()
        completed = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, str(corpus_path), str(scratch), "MARK"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert completed.returncode == 0, completed.stderr
        counts, peak = completed.stdout.split("\n")[:2]
        assert counts.split() == [str(lines), str(lines // 50)]
        peaks[megabytes] = int(peak)
        corpus_path.unlink()
    # 16x the corpus; what grows with it is 16 bytes a segment (sizes, source ids).
    assert peaks[256] - peaks[16] < 48, peaks
