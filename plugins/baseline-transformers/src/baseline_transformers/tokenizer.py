"""The ``hf_tokenizer`` adapter: a pretrained Hugging Face tokenizer from local files.

Imports ``transformers``: loaded only when an ``hf_tokenizer`` component is created.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from baseline.errors import ConfigError
from baseline.plugins.protocols import ExportInfo, FitSource
from baseline_transformers import HFTokenizerConfig
from baseline_transformers.local import resolve_local

#: The directory, inside the run directory, that holds the run's tokenizer.
RUN_DIR_NAME = "hf_tokenizer"
#: No length warnings: the core encodes whole segments and cuts windows itself.
_UNLIMITED = 1 << 62
log = logging.getLogger("baseline")


class HFTokenizer:
    """A ``transformers`` fast tokenizer; the end-of-segment token is its EOS token."""

    def __init__(self, config: HFTokenizerConfig) -> None:
        self.config = config
        self.source = resolve_local(
            config.path, config.base_dir, key_path="tokenizer.path", kind="tokenizer"
        )
        self._tokenizer: Any = None

    @property
    def tokenizer(self) -> Any:
        """The ``transformers`` tokenizer (after :meth:`fit` or :meth:`load`)."""
        if self._tokenizer is None:
            self._tokenizer = self._read(self.source, key_path="tokenizer.path")
        return self._tokenizer

    def _read(self, path: Path, *, key_path: str) -> Any:
        if path.is_dir() and not (path / "tokenizer.json").is_file():
            raise ConfigError(
                f"{path} has no tokenizer.json; give a directory written by a fast tokenizer's "
                "save_pretrained, or the tokenizer.json file itself",
                key_path=key_path,
            )
        try:
            if path.is_dir():
                tokenizer = AutoTokenizer.from_pretrained(
                    path, local_files_only=True, trust_remote_code=self.config.trust_remote_code
                )
            else:
                tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path))
        except Exception as error:
            raise ConfigError(
                f"{path}: cannot be loaded as a tokenizer ({type(error).__name__}: "
                f"{' '.join(str(error).split())[:300]})",
                key_path=key_path,
            ) from None
        tokenizer.model_max_length = _UNLIMITED
        eos = self.config.eos_token or tokenizer.eos_token
        if eos is None:
            raise ConfigError(
                f"{path} has no EOS token; set tokenizer.eos_token to the token that ends a "
                f"segment (one of its tokens, e.g. {_special_examples(tokenizer)})",
                key_path="tokenizer.eos_token",
            )
        if tokenizer.convert_tokens_to_ids(eos) in (None, tokenizer.unk_token_id) or (
            eos not in tokenizer.get_vocab()
        ):
            raise ConfigError(
                f"{eos!r} is not a token of {path}; use one of its tokens, e.g. "
                f"{_special_examples(tokenizer)}",
                key_path="tokenizer.eos_token",
            )
        tokenizer.eos_token = eos
        return tokenizer

    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer can produce, added tokens included."""
        return len(self.tokenizer)

    @property
    def end_of_segment_id(self) -> int:
        """The id of the EOS token (``eos_token`` when configured)."""
        return int(self.tokenizer.eos_token_id)

    def fit(self, texts: Iterator[str], source: FitSource) -> None:
        """Learns nothing: the tokenizer is pretrained (``texts`` is not read)."""
        log.info("tokenizer: %s (pretrained, nothing to fit)", self.source)
        _ = self.tokenizer

    def load(self, path: Path) -> None:
        """Load the directory written by :meth:`save`."""
        self._tokenizer = self._read(path, key_path="tokenizer.file")

    def save(self, directory: Path) -> str:
        """Write the tokenizer (``save_pretrained``) into ``directory/hf_tokenizer``."""
        target = directory / RUN_DIR_NAME
        staging = directory / f".{RUN_DIR_NAME}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        self.tokenizer.save_pretrained(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return RUN_DIR_NAME

    def fingerprint(self) -> str:
        """Hash of the serialized tokenizer and its EOS: identical hashes encode identically."""
        digest = hashlib.sha256(self.tokenizer.backend_tokenizer.to_str().encode("utf-8"))
        digest.update(b"\0" + str(self.tokenizer.eos_token).encode("utf-8"))
        return digest.hexdigest()

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens added."""
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [list(ids) for ids in encoded]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, as ``AutoTokenizer`` decodes them (special tokens dropped)."""
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def export_hf(self, directory: Path, info: ExportInfo) -> None:
        """``save_pretrained`` of the tokenizer with its end-of-segment token as EOS and the
        run's context length as ``model_max_length``."""
        tokenizer = self.tokenizer
        tokenizer.model_max_length = info.seq_len
        try:
            tokenizer.save_pretrained(directory)
        finally:
            tokenizer.model_max_length = _UNLIMITED


def _special_examples(tokenizer: Any) -> str:
    specials = [t for t in tokenizer.all_special_tokens if t][:3] or list(
        tokenizer.get_added_vocab()
    )[:3]
    return ", ".join(repr(t) for t in specials) or "'</s>'"
