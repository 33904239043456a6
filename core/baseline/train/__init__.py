"""The train wing: the training loop and its components.

- ``trainer``: ``Trainer``, which only orchestrates the loop;
- ``checkpointer``: saving, rotating and resuming checkpoints;
- ``validator``: validation loss, bits per byte and samples;
- ``loss_windows``: the loss sums of each logging cadence (checkpointed);
- ``device``: device, precision and peak FLOP/s;
- ``optim`` and ``muon``: optimizers and the learning-rate schedule;
- ``signals``: stopping on SIGINT/SIGTERM after the current step.

May import: :mod:`baseline.config`, :mod:`baseline.plugins`, :mod:`baseline.distributed`,
:mod:`baseline.runs`, :mod:`baseline.data`, :mod:`baseline.metrics`, :mod:`baseline.errors`.
"""
