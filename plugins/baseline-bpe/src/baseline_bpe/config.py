"""Config of the ``bpe`` tokenizer."""

from __future__ import annotations

import attrs

from baseline.config import TokenizerConfig, at_least, path_field

#: Byte-level BPE always holds the 256 single-byte tokens.
BYTE_ALPHABET_SIZE = 256


@attrs.frozen(kw_only=True)
class BPETokenizerConfig(TokenizerConfig):
    """Byte-level BPE.

    The vocabulary has ``base_vocab_size`` learned entries (the 256 bytes plus merges),
    ids ``0 .. base_vocab_size - 1``, followed by ``num_special_tokens`` special ids; the
    first special id (``base_vocab_size``) ends every segment. Special ids exist only as ids:
    no text, not even ``<|endofsegment|>`` written out, ever encodes to one.
    """

    base_vocab_size: int = attrs.field(default=1024, validator=at_least(BYTE_ALPHABET_SIZE + 1))
    num_special_tokens: int = attrs.field(default=1, validator=at_least(1))
    vocab_path: str = path_field()
    #: Merges need at least this many occurrences in the training text.
    min_frequency: int = attrs.field(default=2, validator=at_least(1))

    @property
    def vocab_size(self) -> int:
        """Total vocabulary size, specials included."""
        return self.base_vocab_size + self.num_special_tokens
