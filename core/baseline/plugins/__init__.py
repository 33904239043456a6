"""The plugins wing: the contract between the core and its plugins, and how plugins are found.

- ``hookspecs``: the pluggy hook specifications and ``hookimpl`` (public: plugin authors import it);
- ``protocols``: the adapter protocols and records a component implements or receives (public);
- ``discovery``: loading the ``baseline.plugins`` entry points, each in isolation;
- ``registry``: components by kind and name, with did-you-mean and duplicate detection;
- ``components``: building the adapters an experiment names;
- ``output_checks``: checking plugin output (logits, ids, shapes) where it enters the core;
- ``versions``: the installed versions recorded in a run.

May import: :mod:`baseline.config` and :mod:`baseline.errors`.
"""
