"""Local paths only: resolve a configured path, refuse Hub names with the pre-download recipe."""

from __future__ import annotations

import re
from pathlib import Path

from baseline.errors import ConfigError

#: ``owner/name`` or ``name``: what a Hugging Face Hub repository id looks like.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")

#: Per component kind: the ``transformers`` call that downloads and saves it.
_RECIPES = {
    "model": "from transformers import AutoModelForCausalLM as A",
    "tokenizer": "from transformers import AutoTokenizer as A",
}


def resolve_local(value: str, base_dir: str, *, key_path: str, kind: str) -> Path:
    """The existing local path ``value`` names (relative to ``base_dir``).

    A value that does not exist locally and looks like a Hub id is refused with the
    commands that pre-download it (runs never reach the network); anything else that does
    not exist is a plain "not found".
    """
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    if path.exists():
        return path
    if _HUB_ID.match(value) and not value.startswith("."):
        raise ConfigError(
            f"{value!r} is not a local path ({path} does not exist); baseline loads Hugging "
            f"Face {kind}s from local directories only, without network. Pre-download it on a "
            f'machine with network access: python -c "{_RECIPES[kind]}; '
            f"A.from_pretrained('{value}').save_pretrained('DIR')\", copy DIR here and set "
            f"{key_path} to DIR",
            key_path=key_path,
        )
    raise ConfigError(f"{path} does not exist; give a local directory", key_path=key_path)
