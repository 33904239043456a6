"""The bpe tokenizer: really trained; reuse, mismatch and corruption of the vocab file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import baseline_bpe
from baseline.data.fit_record import fit_record_path
from baseline.errors import ConfigError, DataError
from baseline.plugins.protocols import FitSource
from baseline.testing import SAMPLE_TEXTS, check_tokenizer_adapter, in_process_plugins
from baseline_bpe import BPETokenizerConfig
from baseline_bpe.tokenizer import BPETokenizer

CORPUS = [
    f"{text} line {i}: to be, or not to be, that is the question"
    for i in range(200)
    for text in SAMPLE_TEXTS
]


#: The CORPUS as every segment of one dataset, all of them training segments.
SOURCE = FitSource("corpus", "identity-of-corpus", np.ones(len(CORPUS), dtype=bool))


def make(vocab_path: Path, **kwargs: int) -> BPETokenizer:
    return BPETokenizer(
        BPETokenizerConfig(
            vocab_path=str(vocab_path), base_vocab_size=kwargs.pop("base_vocab_size", 300), **kwargs
        )
    )


def test_contract(tmp_path: Path) -> None:
    tokenizer = check_tokenizer_adapter(
        lambda: make(tmp_path / "bpe.json", num_special_tokens=3), CORPUS, tmp_path / "run"
    )
    assert tokenizer.vocab_size == 303
    assert tokenizer.end_of_segment_id == 300
    assert tokenizer.encode_batch(["<|endofsegment|>"])[0] != [
        300
    ]  # text never maps to a special id
    assert len(tokenizer.encode_batch(["to be, or not to be"])[0]) < len(
        "to be, or not to be"
    )  # merges learned


def test_vocab_file_is_reused_not_retrained(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "bpe.json"
    first = make(path)
    first.fit(iter(CORPUS), SOURCE)
    saved = path.read_bytes()
    second = make(path)
    second.fit(
        iter(["completely different text"] * 10), SOURCE
    )  # would give other merges if it retrained
    assert path.read_bytes() == saved
    assert second.encode_batch(CORPUS[:5]) == first.encode_batch(CORPUS[:5])


def test_mismatched_vocab_file_is_an_error_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "bpe.json"
    make(path).fit(iter(CORPUS), SOURCE)
    saved = path.read_bytes()
    with pytest.raises(
        ConfigError,
        match=r"tokenizer.vocab_path: .*bpe.json does not match the config: vocab size 300, config asks for base_vocab_size=320",
    ) as caught:
        make(path, base_vocab_size=320).fit(iter(CORPUS), SOURCE)
    assert "Delete it to retrain" in str(caught.value)
    assert path.read_bytes() == saved


def test_a_tokenizer_file_from_elsewhere_is_refused(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    other = Tokenizer(models.BPE())
    other.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    other.train_from_iterator(CORPUS, trainer=trainer)
    path = tmp_path / "bpe.json"
    path.write_text(other.to_str())
    with pytest.raises(
        ConfigError, match=r"added tokens \['<s>'\] \(not written by the bpe plugin\)"
    ):
        make(path).fit(iter(CORPUS), SOURCE)


def test_special_ids_follow_the_learned_vocabulary(tmp_path: Path) -> None:
    path = tmp_path / "bpe.json"
    make(path).fit(iter(CORPUS), SOURCE)
    more_specials = make(path, num_special_tokens=4)  # the file holds no specials: reused as is
    more_specials.fit(iter(CORPUS), SOURCE)
    assert more_specials.vocab_size == 304 and more_specials.end_of_segment_id == 300
    assert more_specials.decode([*more_specials.encode_batch(["to be"])[0], 300, 303]) == "to be"


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"version": "1.0"}', b"\x00\x01\x02"])
def test_corrupt_vocab_file_is_an_error_and_kept(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bpe.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="is not a readable tokenizer file"):
        make(path).fit(iter(CORPUS), SOURCE)
    assert path.read_bytes() == content


def test_vocab_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory; point it at a file"):
        make(tmp_path).fit(iter(CORPUS), SOURCE)


def test_corpus_too_small_for_the_vocabulary(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="lower base_vocab_size"):
        make(tmp_path / "bpe.json", base_vocab_size=5000).fit(iter(["tiny corpus"]), SOURCE)
    assert not (tmp_path / "bpe.json").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> BPETokenizer:
    tokenizer = make(tmp_path_factory.mktemp("bpe") / "bpe.json")
    tokenizer.fit(iter(CORPUS), SOURCE)
    return tokenizer


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=200))
def test_round_trip_property(trained: BPETokenizer, text: str) -> None:
    ids = trained.encode_batch([text])[0]
    assert all(0 <= i < trained.vocab_size for i in ids)
    assert trained.decode(ids) == text


def test_a_batch_encodes_each_text_as_encode_alone_does(trained: BPETokenizer) -> None:
    texts = [*CORPUS[:50], "", "  ", "ünïcode 🙂\n\nand <|endofsegment|>"]
    alone = [trained.tokenizer.encode(text, add_special_tokens=False).ids for text in texts]
    assert trained.encode_batch(texts) == alone


def test_tokenizers_without_encode_batch_fast_encode_the_same(
    trained: BPETokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Older:  # tokenizers before 0.20: encode_batch only
        def __init__(self, inner: object) -> None:
            self.encode_batch = inner.encode_batch  # type: ignore[attr-defined]

    expected = trained.encode_batch(CORPUS[:20])
    monkeypatch.setattr(trained, "_tokenizer", Older(trained.tokenizer))
    assert trained.encode_batch(CORPUS[:20]) == expected


def test_registers_bpe() -> None:
    assert in_process_plugins(baseline_bpe, installed=False).registry.names("tokenizer") == ["bpe"]


def source_with_training(mask_indices: range, identity: str = "identity-of-corpus") -> FitSource:
    mask = np.zeros(len(CORPUS), dtype=bool)
    mask[list(mask_indices)] = True
    return FitSource("corpus", identity, mask)


def test_the_vocab_file_records_what_it_was_fitted_on(tmp_path: Path) -> None:
    path = tmp_path / "bpe.json"
    source = source_with_training(range(0, 1000))
    make(path).fit(iter(CORPUS[:1000]), source)
    record = json.loads(fit_record_path(path).read_text())
    assert record["dataset_identity"] == "identity-of-corpus"
    assert record["num_segments"] == len(CORPUS)
    assert record["num_train_segments"] == 1000


def test_reuse_with_the_same_split_is_allowed_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bpe.json"
    source = source_with_training(range(0, 1000))
    make(path).fit(iter(CORPUS[:1000]), source)
    with caplog.at_level(logging.INFO, logger="baseline"):
        make(path).fit(iter([]), source)
    assert "bpe.json was fitted on this split's training segments" in caplog.text


def test_reuse_with_a_split_whose_validation_it_saw_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bpe.json"
    make(path).fit(iter(CORPUS[:1000]), source_with_training(range(0, 1000)))
    saved = path.read_bytes(), fit_record_path(path).read_bytes()
    with pytest.raises(ConfigError) as caught:
        make(path).fit(iter(CORPUS[:800]), source_with_training(range(0, 800)))
    message = str(caught.value)
    assert message.startswith(f"tokenizer.vocab_path: {path} was fitted on a different split")
    assert f"200 of this split's {len(CORPUS) - 800:,} validation segments" in message
    assert "delete it (and its .fit.json) or point tokenizer.vocab_path at a new file" in message
    assert "\n" not in message
    assert (path.read_bytes(), fit_record_path(path).read_bytes()) == saved


def test_reuse_fitted_on_part_of_the_training_side_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "bpe.json"
    make(path).fit(iter(CORPUS[:800]), source_with_training(range(0, 800)))
    make(path).fit(iter(CORPUS[:1000]), source_with_training(range(0, 1000)))


def test_reuse_of_a_file_fitted_on_another_corpus_is_allowed_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bpe.json"
    make(path).fit(iter(CORPUS), source_with_training(range(len(CORPUS)), identity="other"))
    with caplog.at_level(logging.INFO, logger="baseline"):
        make(path).fit(iter([]), source_with_training(range(0, 10)))
    assert "bpe.json was fitted on another corpus ('corpus', identity other)" in caplog.text


def test_a_vocab_file_without_a_fit_record_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bpe.json"
    make(path).fit(iter(CORPUS), SOURCE)
    fit_record_path(path).unlink()  # as written before fit records existed
    saved = path.read_bytes()
    with pytest.raises(ConfigError) as caught:
        make(path).fit(iter(CORPUS), SOURCE)
    message = str(caught.value)
    assert f"{path} has no fit record (bpe.json.fit.json)" in message
    assert "to fit one on this split's training segments" in message
    assert path.read_bytes() == saved


def test_an_unreadable_fit_record_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bpe.json"
    make(path).fit(iter(CORPUS), SOURCE)
    fit_record_path(path).write_text("{broken")
    with pytest.raises(ConfigError, match=r"bpe.json.fit.json is unreadable \(JSONDecodeError\)"):
        make(path).fit(iter(CORPUS), SOURCE)
