"""On-disk cache of token streams, keyed by the dataset, the tokenizer and their configs.

A second run of the same experiment memory-maps the cached stream instead of tokenizing
again. An entry is built in a temporary directory and renamed into place when complete, so
an interrupted build never leaves a half-written entry under its final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from baseline.protocols import TokenizerAdapter
from baseline.tokens import TokenStream, build_token_stream, open_token_stream

CACHE_FORMAT = 1


def adapter_fingerprint(adapter: object) -> str | None:
    """The adapter's optional ``fingerprint()``: a string that changes when its output would."""
    method = getattr(adapter, "fingerprint", None)
    return method() if callable(method) else None


def cache_key(parts: Mapping[str, Any]) -> str:
    """A stable hash of JSON-serialisable ``parts``."""
    text = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def load_or_build(
    cache_root: Path,
    key: str,
    segments: Callable[[], Iterable[str]],
    tokenizer: TokenizerAdapter,
) -> tuple[TokenStream, bool]:
    """The cached stream for ``key`` (and ``True``), or a newly built and cached one."""
    entry = cache_root / key
    if entry.is_dir():
        return open_token_stream(entry), True
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_root))
    current_umask = os.umask(0)
    os.umask(current_umask)
    staging.chmod(0o777 & ~current_umask)  # mkdtemp creates 0700
    try:
        build_token_stream(segments(), tokenizer, staging)
        try:
            staging.rename(entry)
        except OSError:  # another process finished the same entry first
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return open_token_stream(entry), False
