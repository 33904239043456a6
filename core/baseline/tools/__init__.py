"""The tools wing: what a user does with a trained run.

- ``inference``: loading a run (finished, or stopped at its newest checkpoint) for inference;
- ``generation``: sampling text;
- ``evaluation``: ``baseline eval``;
- ``export``: ``baseline export`` to Hugging Face transformers;
- ``scaffold``: ``baseline new-plugin``, a new plugin distribution from templates.

May import every other wing; no wing imports it (only ``cli`` and ``pipeline``).
"""
