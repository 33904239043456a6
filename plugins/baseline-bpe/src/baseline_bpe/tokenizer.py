"""The ``bpe`` adapter: train, persist, verify and use a Hugging Face byte-level BPE."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from baseline.data.fit_record import check_fit_record, write_fit_record
from baseline.errors import ConfigError, DataError
from baseline.plugins.protocols import ExportInfo, FitSource
from baseline.runs.artifacts import atomic_write_text
from baseline.runs.locks import waiting_lock
from baseline_bpe.config import BPETokenizerConfig

RUN_DIR_FILENAME = "tokenizer.json"
log = logging.getLogger("baseline")


class BPETokenizer:
    """Byte-level BPE tokenizer adapter."""

    def __init__(self, config: BPETokenizerConfig) -> None:
        self.config = config
        self._tokenizer: Tokenizer | None = None

    @property
    def tokenizer(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (after :meth:`fit` or :meth:`load`)."""
        if self._tokenizer is None:
            raise RuntimeError("BPETokenizer used before fit() or load()")
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Vocabulary size including special tokens."""
        return self.config.vocab_size

    @property
    def end_of_segment_id(self) -> int:
        """Id of ``<|endofsegment|>``."""
        return self.config.base_vocab_size

    def fit(self, texts: Iterator[str], source: FitSource) -> None:
        """Load ``vocab_path`` if it exists, else train on ``texts`` and save it.

        The file is written with its fit record (``<vocab_path>.fit.json``: which dataset and
        which segments it learned from). An existing file must match the config and must
        not have learned from any of this split's validation segments.
        """
        path = Path(self.config.vocab_path)
        if path.is_dir():
            raise ConfigError(
                f"{path} is a directory; point it at a file, e.g. {path / 'bpe.json'}",
                key_path="tokenizer.vocab_path",
            )
        if path.exists():
            self._load_fitted(path, source)
            return
        try:
            # Runs that share a new vocab_path fit it once: the first trains and writes it
            # while the others wait for the lock, then load what it wrote.
            with waiting_lock(path.with_name(path.name + ".lock"), setting="tokenizer.vocab_path"):
                if path.exists():
                    self._load_fitted(path, source)
                    return
                self._tokenizer = self._train(texts)
                # The record first: a vocab file never exists without the record of what it saw.
                write_fit_record(path, source, tokenizer="bpe")
                atomic_write_text(path, self._tokenizer.to_str())
                log.info("tokenizer: trained and written to %s", path)
        except OSError as error:
            raise ConfigError(
                f"cannot write {path} ({error.strerror}); choose a writable location",
                key_path="tokenizer.vocab_path",
            ) from None

    def _load_fitted(self, path: Path, source: FitSource) -> None:
        tokenizer = self._read(path, key_path="tokenizer.vocab_path")
        log.info("tokenizer: %s", check_fit_record(path, source, key_path="tokenizer.vocab_path"))
        self._tokenizer = tokenizer

    def _train(self, texts: Iterator[str]) -> Tokenizer:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=self.config.base_vocab_size,
            min_frequency=self.config.min_frequency,
            special_tokens=[],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        learned = tokenizer.get_vocab_size(with_added_tokens=True)
        if learned != self.config.base_vocab_size:
            raise DataError(
                f"tokenizer.base_vocab_size: the corpus only supports "
                f"{learned} BPE tokens, fewer than "
                f"{self.config.base_vocab_size}; lower base_vocab_size or min_frequency"
            )
        return tokenizer

    def _read(self, path: Path, *, key_path: str) -> Tokenizer:
        try:
            tokenizer = Tokenizer.from_file(str(path))
            model_type = json.loads(tokenizer.to_str())["model"]["type"]
        except Exception as error:
            raise ConfigError(
                f"{path} is not a readable tokenizer file ({type(error).__name__}); "
                + (
                    "delete it to train a new one, or point vocab_path elsewhere"
                    if key_path == "tokenizer.vocab_path"
                    else "the run directory is damaged or from an incompatible version"
                ),
                key_path=key_path,
            ) from None
        found_size = tokenizer.get_vocab_size(with_added_tokens=True)
        added = [token.content for token in tokenizer.get_added_tokens_decoder().values()]
        problems = []
        if model_type != "BPE":
            problems.append(f"model {model_type}, expected BPE")
        if found_size != self.config.base_vocab_size:
            problems.append(
                f"vocab size {found_size}, config asks for base_vocab_size="
                f"{self.config.base_vocab_size}"
            )
        if added:
            problems.append(f"added tokens {added[:3]} (not written by the bpe plugin)")
        if problems:
            raise ConfigError(
                f"{path} does not match the config: {'; '.join(problems)}. "
                + (
                    "Delete it to retrain, or point vocab_path at a new file"
                    if key_path == "tokenizer.vocab_path"
                    else "The run directory is damaged or from an incompatible version"
                ),
                key_path=key_path,
            )
        return tokenizer

    def load(self, path: Path) -> None:
        """Load a tokenizer file written by :meth:`save` (or by :meth:`fit`)."""
        self._tokenizer = self._read(path, key_path="tokenizer.file")

    def save(self, directory: Path) -> str:
        """Write ``tokenizer.json`` into ``directory``."""
        atomic_write_text(directory / RUN_DIR_FILENAME, self.tokenizer.to_str())
        return RUN_DIR_FILENAME

    def fingerprint(self) -> str:
        """Hash of the serialized tokenizer: identical hashes encode identically."""
        return hashlib.sha256(self.tokenizer.to_str().encode("utf-8")).hexdigest()

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens added).

        ``tokenizers`` encodes the batch on every core (unless ``TOKENIZERS_PARALLELISM`` is
        false) without holding the GIL; ``encode_batch_fast`` (tokenizers 0.20 and later)
        skips the character offsets, which nothing here uses.
        """
        encode = getattr(self.tokenizer, "encode_batch_fast", None) or self.tokenizer.encode_batch
        encodings = encode(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special ids are dropped."""
        base = self.config.base_vocab_size
        return self.tokenizer.decode([i for i in ids if i < base])

    def export_hf(self, directory: Path, info: ExportInfo) -> None:
        """Write a ``transformers`` fast tokenizer with the same ids (``baseline export``;
        :mod:`baseline_bpe.hf_export` imports ``transformers``)."""
        from baseline_bpe.hf_export import export_bpe

        export_bpe(self.tokenizer, self.config.num_special_tokens, directory, info)
