"""The bpe tokenizer: really trained; reuse, mismatch and corruption of the vocab file."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import baseline_bpe
from baseline.errors import ConfigError, DataError
from baseline.testing import SAMPLE_TEXTS, check_tokenizer_adapter, in_process_plugins
from baseline_bpe import BPETokenizerConfig
from baseline_bpe.tokenizer import BPETokenizer

CORPUS = [
    f"{text} line {i}: to be, or not to be, that is the question"
    for i in range(200)
    for text in SAMPLE_TEXTS
]


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
    first.fit(iter(CORPUS))
    saved = path.read_bytes()
    second = make(path)
    second.fit(iter(["completely different text"] * 10))  # would give other merges if it retrained
    assert path.read_bytes() == saved
    assert second.encode_batch(CORPUS[:5]) == first.encode_batch(CORPUS[:5])


def test_mismatched_vocab_file_is_an_error_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "bpe.json"
    make(path).fit(iter(CORPUS))
    saved = path.read_bytes()
    with pytest.raises(
        ConfigError,
        match=r"tokenizer.vocab_path: .*bpe.json does not match the config: vocab size 300, config asks for base_vocab_size=320",
    ) as caught:
        make(path, base_vocab_size=320).fit(iter(CORPUS))
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
        make(path).fit(iter(CORPUS))


def test_special_ids_follow_the_learned_vocabulary(tmp_path: Path) -> None:
    path = tmp_path / "bpe.json"
    make(path).fit(iter(CORPUS))
    more_specials = make(path, num_special_tokens=4)  # the file holds no specials: reused as is
    more_specials.fit(iter(CORPUS))
    assert more_specials.vocab_size == 304 and more_specials.end_of_segment_id == 300
    assert more_specials.decode([*more_specials.encode_batch(["to be"])[0], 300, 303]) == "to be"


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"version": "1.0"}', b"\x00\x01\x02"])
def test_corrupt_vocab_file_is_an_error_and_kept(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bpe.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="is not a readable tokenizer file"):
        make(path).fit(iter(CORPUS))
    assert path.read_bytes() == content


def test_vocab_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory; point it at a file"):
        make(tmp_path).fit(iter(CORPUS))


def test_corpus_too_small_for_the_vocabulary(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="lower base_vocab_size"):
        make(tmp_path / "bpe.json", base_vocab_size=5000).fit(iter(["tiny corpus"]))
    assert not (tmp_path / "bpe.json").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> BPETokenizer:
    tokenizer = make(tmp_path_factory.mktemp("bpe") / "bpe.json")
    tokenizer.fit(iter(CORPUS))
    return tokenizer


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=200))
def test_round_trip_property(trained: BPETokenizer, text: str) -> None:
    ids = trained.encode_batch([text])[0]
    assert all(0 <= i < trained.vocab_size for i in ids)
    assert trained.decode(ids) == text


def test_registers_bpe() -> None:
    assert in_process_plugins(baseline_bpe, installed=False).registry.names("tokenizer") == ["bpe"]
