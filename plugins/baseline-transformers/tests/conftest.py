"""Offline Hugging Face settings, made before anything imports ``transformers``.

The tests never reach the network: the Hub is switched off and ``HF_HOME`` is a fresh
temporary directory, so nothing cached on this machine is used either.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_hf_home = tempfile.mkdtemp(prefix="baseline-transformers-tests-")
atexit.register(shutil.rmtree, _hf_home, ignore_errors=True)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = _hf_home
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
