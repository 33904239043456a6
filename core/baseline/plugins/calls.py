"""Calls into a plugin's adapter: whatever they raise names the component that raised it.

The core wraps each call it makes into a dataset, tokenizer, split or model adapter::

    with plugin_call(label):  # "split 'holdout' from baseline-holdout"
        plan = split.split(sizes)

A :class:`~baseline.errors.BaselineError` the plugin raises keeps its class, exit code and key
path, its message prefixed with the label; any other exception becomes a
:class:`~baseline.errors.PluginError` naming the label, the exception type and its message
(one line). An error labelled once is not labelled again by an enclosing call (a dataset's
error raised while the tokenizer consumes its segments names the dataset).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TypeVar

from baseline.errors import BaselineError, ConfigError, PluginError

T = TypeVar("T")

#: Set on an exception once it names its component.
_LABELLED = "_baseline_plugin_label"


class plugin_call:
    """Label what the adapter calls inside the ``with`` block raise (see the module doc)."""

    __slots__ = ("label",)

    def __init__(self, label: str) -> None:
        self.label = label

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not isinstance(error, Exception):  # none, or KeyboardInterrupt, SystemExit...
            return
        result = labelled(error, self.label)
        if result is not error:  # else it goes on as it is, traceback intact
            raise result from error


def plugin_iter(label: str, method: Callable[[], Iterable[T]]) -> Iterator[T]:
    """What ``method()`` yields (a dataset's ``segments``), the call and each step of it a
    :class:`plugin_call`."""
    try:
        yield from method()
    except Exception as error:
        result = labelled(error, label)
        if result is error:
            raise
        raise result from error


def labelled(error: Exception, label: str) -> Exception:
    """``error`` naming ``label``: a :class:`BaselineError` prefixed in place, anything else
    as a new :class:`PluginError`; an error that names a component already is returned as
    it is."""
    if getattr(error, _LABELLED, None) or _out_of_memory(error):
        return error
    if isinstance(error, BaselineError):
        text = error.message if isinstance(error, ConfigError) else str(error)
        if not text.startswith(label):
            if isinstance(error, ConfigError):
                error.message = f"{label}: {text}"
                error.args = (error._render(),)
            else:
                error.args = (f"{label}: {text}",)
        result: Exception = error
    else:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        result = PluginError(f"{label}: {detail}")
    setattr(result, _LABELLED, label)
    return result


def _out_of_memory(error: Exception) -> bool:
    """Running out of (host or device) memory is the run's size, not the plugin's fault."""
    return isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"
