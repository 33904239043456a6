"""The experiment wing: from ``experiment.toml`` to a resolved, validated experiment.

- ``loading``: TOML and ``--set`` overrides to typed configs (cattrs);
- ``validation``: the rules that span sections and components;
- ``resolved``: the resolved experiment (components, logger settings, metrics plan) that the
  pipeline, trainer and commands take instead of looking components up again.

May import: :mod:`baseline.config`, :mod:`baseline.plugins`, :mod:`baseline.runs`,
:mod:`baseline.errors`.
"""
