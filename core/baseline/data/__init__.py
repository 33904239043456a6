"""The data wing: from a dataset to the token windows a step trains on.

- ``preparation``: read, split, fit on training segments only, tokenize (the order of work);
- ``segments``: segment sizes streamed to disk;
- ``fit_record`` and ``lineage``: what a fitted file or a run's weights learned from;
- ``tokens`` and ``token_cache``: tokenizing and the cache on disk;
- ``measured`` and ``file_stamps``: what an earlier run measured, reused while the files it
  came from (and the cache's) are unchanged;
- ``presence``: a dataset's files listed and checked without reading them (``validate``);
- ``prepared``: the prepared data handed to the trainer;
- ``windows``: training and validation windows, sharded over ranks;
- ``mixture``, ``mixture_windows`` and ``mixture_preparation``: a ``mixture`` dataset's
  schedule (which source each window comes from), its training windows, and its preparation
  (each source split on its own, the tokenizer fitted on every source's training segments).

May import: :mod:`baseline.config`, :mod:`baseline.plugins`, :mod:`baseline.runs`,
:mod:`baseline.errors`.
"""
