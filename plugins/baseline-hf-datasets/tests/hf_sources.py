"""Real datasets on disk for the hf_text tests: one per source kind the plugin reads.

``datasets`` is imported inside :func:`build_sources`, after ``conftest.py`` has switched the
Hugging Face libraries offline.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from baseline.testing import SAMPLE_TEXTS

#: Texts with newlines, "\r\n", tabs, leading spaces, accents: one row each.
TEXTS = [f"{text} {i}" for i in range(60) for text in SAMPLE_TEXTS[:4]]
#: Rows that must be skipped, interleaved with the texts.
BLANKS: tuple[str | None, ...] = (None, "", "  \n\t ")
VALIDATION_TEXTS = [f"held out {i}: {SAMPLE_TEXTS[4]}" for i in range(10)]


def with_blanks(texts: Sequence[str]) -> list[str | None]:
    """``texts`` with a blank row (None, empty or whitespace) after every fifth one."""
    rows: list[str | None] = []
    for index, text in enumerate(texts):
        rows.append(text)
        if index % 5 == 0:
            rows.append(BLANKS[(index // 5) % len(BLANKS)])
    return rows


@attrs.frozen
class Source:
    """An ``hf_text`` table (without ``name``) and the segments it must yield."""

    table: dict[str, Any]
    expected: list[str]
    #: Columns of the split, as the error for a wrong text_column lists them.
    columns: tuple[str, ...] = ("id", "text")
    #: Splits, as the error for a wrong split lists them (None: a single saved Dataset).
    splits: tuple[str, ...] | None = ("train",)

    def config(self, **changes: Any) -> Any:
        from baseline_hf_datasets import HFTextDatasetConfig

        table = {**self.table, **changes}
        if "data_files" in table:
            table["data_files"] = tuple(table["data_files"])
        return HFTextDatasetConfig(**table)


def _records(texts: Sequence[str | None]) -> list[dict[str, Any]]:
    return [{"id": index, "text": text} for index, text in enumerate(texts)]


def _write_jsonl(path: Path, texts: Sequence[str | None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in _records(texts):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def build_sources(root: Path) -> dict[str, Source]:
    """Every source kind, written under ``root``."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = with_blanks(TEXTS)
    built: dict[str, Source] = {}

    # text: one row per line; the texts' own line breaks ("\n", "\r\n") split them further.
    text_path = root / "corpus.txt"
    text_path.write_text("\n".join(row or "" for row in rows), encoding="utf-8", newline="")
    lines = "\n".join(row or "" for row in rows).replace("\r\n", "\n").split("\n")
    built["text"] = Source(
        {"path": "text", "data_files": [str(text_path)]},
        [line for line in lines if line.strip()],
        columns=("text",),
    )

    json_path = _write_jsonl(root / "corpus.jsonl", rows)
    built["json"] = Source({"path": "json", "data_files": [str(json_path)]}, TEXTS)

    parquet_path = root / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist(_records(rows)), parquet_path)
    built["parquet"] = Source({"path": "parquet", "data_files": [str(parquet_path)]}, TEXTS)

    csv_path = root / "corpus.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "text"])
        writer.writeheader()
        writer.writerows(_records(rows))
    built["csv"] = Source({"path": "csv", "data_files": [str(csv_path)]}, TEXTS)

    # A local data directory: splits are inferred from the file names.
    local_dir = root / "local_dir"
    _write_jsonl(local_dir / "train.jsonl", rows)
    _write_jsonl(local_dir / "validation.jsonl", VALIDATION_TEXTS)
    built["local_dir"] = Source({"path": str(local_dir)}, TEXTS, splits=("train", "validation"))

    train = datasets.Dataset.from_list(_records(rows))
    validation = datasets.Dataset.from_list(_records(VALIDATION_TEXTS))
    saved_dict = root / "saved_dict"
    datasets.DatasetDict({"train": train, "validation": validation}).save_to_disk(str(saved_dict))
    built["saved_dict"] = Source({"path": str(saved_dict)}, TEXTS, splits=("train", "validation"))

    saved_dataset = root / "saved_dataset"
    train.save_to_disk(str(saved_dataset))
    built["saved_dataset"] = Source({"path": str(saved_dataset)}, TEXTS, splits=None)
    return built


#: The source kinds, for ``pytest.mark.parametrize``.
SOURCE_KINDS = ("text", "json", "parquet", "csv", "local_dir", "saved_dict", "saved_dataset")
