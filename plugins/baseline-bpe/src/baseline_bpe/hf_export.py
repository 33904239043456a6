"""The ``bpe`` tokenizer as a ``transformers`` fast tokenizer (``baseline export``).

Imports ``transformers`` (an optional dependency: ``pip install baseline-bpe[hf]``). The
exported tokenizer is a ``PreTrainedTokenizerFast`` over the same ``tokenizer.json`` with
the special ids added as special tokens after the learned vocabulary, so every id keeps its
number: ``<|endofsegment|>`` (the end-of-segment id, the EOS) and ``<|special_1|>``, ...
for the other special ids. Like the ``bpe`` tokenizer, it never encodes text to a special id
(``split_special_tokens``): the text ``<|endofsegment|>`` is split as ordinary text.

``tokenizer_config.json`` names the class ``PreTrainedTokenizerFast``, which the
``AutoTokenizer`` of transformers 4.x and 5.x both load.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer

from baseline.errors import ConfigError
from baseline.plugins.protocols import ExportInfo

#: The text of the end-of-segment token in the exported tokenizer.
END_OF_SEGMENT_TOKEN = "<|endofsegment|>"


def special_tokens(count: int) -> list[str]:
    """The texts of the ``count`` special ids, the end-of-segment token first."""
    return [END_OF_SEGMENT_TOKEN] + [f"<|special_{i}|>" for i in range(1, count)]


def export_bpe(
    tokenizer: Tokenizer, num_special_tokens: int, directory: Path, info: ExportInfo
) -> None:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` (and the special tokens) into
    ``directory``: a fast tokenizer that encodes and decodes like the run's ``bpe``."""
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        raise ConfigError(
            "exporting the bpe tokenizer needs transformers: "
            "pip install -c constraints.txt 'baseline-bpe[hf]' (or baseline-transformers)",
            key_path="tokenizer.name",
        ) from None
    backend = Tokenizer.from_str(tokenizer.to_str())
    base = backend.get_vocab_size(with_added_tokens=True)
    names = special_tokens(num_special_tokens)
    backend.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in names])
    if backend.token_to_id(END_OF_SEGMENT_TOKEN) != info.end_of_segment_id or base != (
        info.end_of_segment_id
    ):
        raise ConfigError(
            f"the special ids do not follow the {base} learned tokens "
            f"(end-of-segment id {info.end_of_segment_id}); the run directory is damaged",
            key_path="tokenizer.file",
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=END_OF_SEGMENT_TOKEN,
        pad_token=END_OF_SEGMENT_TOKEN,
        clean_up_tokenization_spaces=False,
        split_special_tokens=True,
        model_max_length=info.seq_len,
    )
    fast.save_pretrained(directory)
    _name_a_class_both_versions_know(directory / "tokenizer_config.json")


def _name_a_class_both_versions_know(path: Path) -> None:
    """transformers 5.x names its fast tokenizer class ``TokenizersBackend``, which 4.x's
    ``AutoTokenizer`` does not know; ``PreTrainedTokenizerFast`` loads in both (5.x keeps it
    as an alias)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("tokenizer_class") != "PreTrainedTokenizerFast":
        data["tokenizer_class"] = "PreTrainedTokenizerFast"
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
