"""Offline W&B settings, made before anything imports ``wandb``.

Every W&B run of these tests is a real offline run: ``wandb`` writes its transaction log
(``<run_dir>/wandb/offline-run-*/run-*.wandb``) and the tests read it back with
``wandb_transaction_log``. W&B's own directories (settings, cache, artifacts) go to a temporary
directory, and no credentials are visible, so nothing can reach a server.

``WANDB_DIR`` is unset: the logger honours it (the W&B run then goes to ``$WANDB_DIR/wandb``),
and the tests expect each W&B run in its run directory unless they set it themselves.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_wandb_home = tempfile.mkdtemp(prefix="baseline-wandb-tests-")
atexit.register(shutil.rmtree, _wandb_home, ignore_errors=True)
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.pop("WANDB_DIR", None)
os.environ["WANDB_CACHE_DIR"] = os.path.join(_wandb_home, "cache")
os.environ["WANDB_CONFIG_DIR"] = os.path.join(_wandb_home, "config")
os.environ["WANDB_DATA_DIR"] = os.path.join(_wandb_home, "data")
os.environ["WANDB_ARTIFACT_DIR"] = os.path.join(_wandb_home, "artifacts")
os.environ["NETRC"] = os.path.join(_wandb_home, "no-netrc")
for _name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_RUN_ID", "WANDB_RESUME"):
    os.environ.pop(_name, None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
