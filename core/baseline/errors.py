"""Exceptions the core raises for problems a user can fix.

Every error the CLI reports is a :class:`BaselineError`; its ``str`` is the one line that is
printed, and ``exit_code`` is the process status (2 for bad input, 1 for training failures).
"""

from __future__ import annotations


class BaselineError(Exception):
    """Base class of every user-facing error; ``str(error)`` is a complete one-line message."""

    exit_code: int = 2


class ConfigError(BaselineError):
    """An experiment configuration that cannot be loaded or fails validation.

    ``source`` names the file (or ``"<config>"`` for configs built in Python) and ``key_path``
    the dotted TOML key (``model.n_heads``), so the message reads
    ``experiment.toml: model.n_heads: must divide d_model=128, got 7``.
    """

    def __init__(self, message: str, *, key_path: str = "", source: str | None = None) -> None:
        self.message = message
        self.key_path = key_path
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [p for p in (self.source, self.key_path) if p]
        text = ": ".join([*parts, self.message])
        # User-supplied keys and values may hold line breaks; the message stays one line.
        return text.replace("\r", "\\r").replace("\n", "\\n")

    def with_source(self, source: str) -> ConfigError:
        """Return a copy of this error attributed to ``source`` (a file name)."""
        if self.source:
            return self
        return ConfigError(self.message, key_path=self.key_path, source=source)

    def under(self, prefix: str) -> ConfigError:
        """Return a copy whose key path is nested under ``prefix`` (``model`` + ``n_heads``)."""
        path = f"{prefix}.{self.key_path}" if self.key_path else prefix
        return ConfigError(self.message, key_path=path, source=self.source)


class FieldError(ValueError):
    """Raised by config validators: ``field`` is the attribute name relative to its class.

    The loader turns it into a :class:`ConfigError` with the full key path.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class PluginError(BaselineError):
    """A plugin that is missing, broken, or conflicts with another plugin."""


class DataError(BaselineError):
    """Input data (a dataset file, a vocabulary file) that cannot be used as configured."""


class RunDirectoryError(BaselineError):
    """The run directory cannot be created, or exists and would be overwritten."""


class RunInterrupted(BaselineError):
    """Training stopped on SIGINT or SIGTERM after saving a checkpoint (exit 130 or 143)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TrainingError(BaselineError):
    """Training could not go on (for example a non-finite loss)."""

    exit_code = 1


class LockError(BaselineError):
    """A lock that cannot be taken: its filesystem does not support locks, or another process
    held it longer than ``run.lock_timeout_s``."""
