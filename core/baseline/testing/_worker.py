"""``baseline run EXPERIMENT [ARGS]`` with :class:`~baseline.testing.components.ContractPlugin`
active: what :class:`~baseline.testing.loggers.LoggerContract` starts under torchrun
(``python -m torch.distributed.run ... -m baseline.testing._worker exp.toml``), so that a
multi-process run needs no installed dataset, tokenizer, model or split."""

from __future__ import annotations

import sys

from baseline.cli import main
from baseline.testing import using_plugins
from baseline.testing.components import ContractPlugin


def run(argv: list[str]) -> int:
    """Run ``baseline run`` with the contract components beside the installed plugins."""
    with using_plugins(ContractPlugin()):
        return main(["run", *argv])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
