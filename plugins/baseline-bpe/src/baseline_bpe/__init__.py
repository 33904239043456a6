"""baseline plugin: tokenizer ``bpe``, byte-level BPE trained with Hugging Face ``tokenizers``.

The trained tokenizer is saved to ``vocab_path`` (Hugging Face ``tokenizer.json`` format)
and reused by later runs when it matches the config. A file that does not match, or cannot
be read, is an error: it is never silently retrained over.
"""

from __future__ import annotations

from baseline.plugins.hookspecs import Register, hookimpl
from baseline_bpe.config import BPETokenizerConfig

__all__ = ["BPETokenizerConfig"]


def _create(config: BPETokenizerConfig) -> object:
    from baseline_bpe.tokenizer import BPETokenizer

    return BPETokenizer(config)


@hookimpl
def baseline_register_tokenizers(register: Register) -> None:
    """Register the ``bpe`` tokenizer."""
    register("bpe", BPETokenizerConfig, _create)
