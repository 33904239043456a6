"""The ``hf_text`` adapter: yields the non-blank values of one text column of one split.

``datasets`` is imported when the data is first loaded, not when this module is imported.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import socket
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

from baseline.errors import ConfigError
from baseline_hf_datasets import HFTextDatasetConfig

__all__ = ["HFTextDataset"]

#: Builders shipped with ``datasets``, used when ``datasets.packaged_modules`` is not readable.
_KNOWN_BUILDERS = frozenset(
    {"arrow", "audiofolder", "csv", "imagefolder", "json", "pandas", "parquet", "sql"}
    | {"text", "videofolder", "webdataset", "xml"}
)
#: Files ``Dataset.save_to_disk`` writes (both) and ``DatasetDict.save_to_disk`` writes.
_SAVED_DATASET_FILES = ("dataset_info.json", "state.json")
_SAVED_DATASET_DICT_FILE = "dataset_dict.json"
#: A Hub dataset id: ``name`` or ``owner/name``.
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?")
#: Seconds to wait for a TCP connection to the Hub before calling it unreachable.
_HUB_PROBE_TIMEOUT_S = 3.0
#: Rows read per Arrow batch in non-streaming mode.
_BATCH_ROWS = 1000
_STRING_DTYPES = ("string", "large_string", "string_view", "null")


@attrs.frozen
class _Source:
    """Where the rows come from, after resolving ``path`` and ``data_files``."""

    kind: Literal["builder", "saved", "local", "hub"]
    #: Builder name, absolute local directory, or Hub name.
    target: str
    data_files: list[str] | dict[str, list[str]] | None
    #: The local directory ``path`` would be (reported when a Hub name is not found).
    local: Path


class HFTextDataset:
    """Loads the split once (lazily) and yields its non-blank texts on every pass.

    Non-streaming datasets are memory-mapped Arrow tables, read batch by batch; streaming
    datasets are iterated row by row and never materialised.
    """

    def __init__(self, config: HFTextDatasetConfig) -> None:
        self.config = config
        self._rows: Any = None  # datasets.Dataset or datasets.IterableDataset
        self._label = config.path
        self._fingerprint: str | None = None

    # -- public -------------------------------------------------------------------------

    @property
    def segment_delimiter(self) -> str:
        """The delimiter the end-of-segment token stands for (``config.segment_delimiter``)."""
        return self.config.segment_delimiter

    def segments(self) -> Iterator[str]:
        """Yield the split's non-blank texts in dataset order, at most ``max_segments``."""
        for text, _ in self.segments_with_sources():
            yield text

    def segments_with_sources(self) -> Iterator[tuple[str, str]]:
        """Yield ``(text, "row N")`` for each segment of :meth:`segments`: ``N`` is the row's
        index in the split (blank rows count)."""
        digest = hashlib.sha256()
        count = 0
        for row, text in self._texts():
            data = text.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
            count += 1
            yield text, f"row {row}"
        if not count:
            raise ConfigError(
                f"{self._label}: column {self.config.text_column!r} of split "
                f"{self.config.split!r} is empty or whitespace only; add text or pick another "
                "text_column",
                key_path="dataset.path",
            )
        self._fingerprint = digest.hexdigest()

    def fingerprint(self) -> str:
        """Hash of exactly what :meth:`segments` yields (computed by a pass when needed)."""
        if self._fingerprint is None:
            for _ in self.segments():
                pass
        assert self._fingerprint is not None
        return self._fingerprint

    # -- reading ------------------------------------------------------------------------

    def _texts(self) -> Iterator[tuple[int, str]]:
        rows = self._load()
        limit = self.config.max_segments
        count = 0
        for index, value in enumerate(self._column_values(rows)):
            if value is None:
                continue
            if not isinstance(value, str):
                raise ConfigError(
                    f"column {self.config.text_column!r} holds {type(value).__name__} values, "
                    f"not strings (row {index}); set text_column to a column of text",
                    key_path="dataset.text_column",
                )
            if not value.strip():
                continue
            yield index, value
            count += 1
            if limit is not None and count >= limit:
                return

    def _column_values(self, rows: Any) -> Iterator[Any]:
        column = self.config.text_column
        if self.config.streaming:
            if rows.column_names is not None:
                rows = rows.select_columns([column])
            iterator = iter(rows)
            while True:
                try:
                    row = next(iterator)
                except StopIteration:
                    return
                except Exception as error:  # a bad file or a lost connection, mid-stream
                    raise ConfigError(
                        f"{self._label}: cannot be read: {type(error).__name__}: {_message(error)}",
                        key_path="dataset.path",
                    ) from error
                if column not in row:
                    raise self._missing_column(list(row))
                yield row[column]
        else:
            view = rows.select_columns([column]).with_format(None)
            for batch in view.iter(batch_size=_BATCH_ROWS):
                yield from batch[column]

    def _load(self) -> Any:
        if self._rows is None:
            rows = self._open()
            self._check_column(rows)
            self._rows = rows
        return self._rows

    def _check_column(self, rows: Any) -> None:
        column = self.config.text_column
        names = rows.column_names  # None for some streamed datasets: checked on the first row
        if names is not None and column not in names:
            raise self._missing_column(names)
        features = rows.features
        if features is None or column not in features:
            return
        feature = features[column]
        dtype = getattr(feature, "dtype", None)
        if type(feature).__name__ != "Value" or dtype not in _STRING_DTYPES:
            found = dtype if isinstance(dtype, str) else type(feature).__name__
            raise ConfigError(
                f"column {column!r} holds {found} values, not strings ({feature}); set "
                "text_column to a column of text",
                key_path="dataset.text_column",
            )

    def _missing_column(self, names: Iterable[str]) -> ConfigError:
        listed = ", ".join(repr(name) for name in names) or "(none)"
        return ConfigError(
            f"no column {self.config.text_column!r} in {self._label} (split "
            f"{self.config.split!r}); columns: {listed}",
            key_path="dataset.text_column",
        )

    # -- loading ------------------------------------------------------------------------

    def _open(self) -> Any:
        import datasets

        source = _resolve_source(self.config)
        self._label = _describe(source)
        if source.kind == "saved":
            return self._open_saved(datasets, source)
        if source.kind == "hub":
            _check_hub_reachable(self.config, source.local)
        kwargs: dict[str, Any] = {
            "path": source.target,
            "name": self.config.config_name,
            "data_files": source.data_files,
            "split": self.config.split,
            "streaming": self.config.streaming,
            "revision": self.config.revision,
        }
        if self.config.trust_remote_code:
            kwargs["trust_remote_code"] = True
        kwargs.update(self.config.builder_options)
        try:
            return datasets.load_dataset(**kwargs)
        except ConfigError:
            raise
        except TypeError as error:
            if self.config.builder_options and "keyword argument" in str(error):
                raise ConfigError(
                    f"{self._label}: the builder does not take one of these options: "
                    f"{_message(error)}; remove it or fix its name",
                    key_path="dataset.builder_options",
                ) from None
            raise _load_error(source, error) from error
        except ConnectionError as error:
            if source.kind == "hub":
                reason = (
                    "offline mode is on (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE) and the dataset "
                    "is not in the local Hugging Face cache"
                    if _offline()
                    else _message(error)
                )
                raise _hub_error(self.config, reason, source.local) from None
            raise _load_error(source, error) from error
        except FileNotFoundError as error:
            if source.kind == "builder":
                raise ConfigError(
                    f"{_message(error)}; check data_files (relative entries are resolved "
                    f"against {Path(self.config.base_dir).expanduser().resolve()})",
                    key_path="dataset.data_files",
                ) from None
            if source.kind == "hub":
                raise ConfigError(
                    f"{self.config.path!r} is neither a local directory ({source.local} does "
                    f"not exist) nor a dataset on the Hugging Face Hub: {_message(error)}",
                    key_path="dataset.path",
                ) from None
            raise _load_error(source, error) from error
        except ValueError as error:
            text = str(error)
            if "split" in text.lower():
                raise self._split_error(datasets, source, text) from None
            if "BuilderConfig" in text or "config name" in text.lower():
                raise ConfigError(
                    f"{self._label}: {_message(error)}", key_path="dataset.config_name"
                ) from None
            raise _load_error(source, error) from error
        except Exception as error:
            raise _load_error(source, error) from error

    def _open_saved(self, datasets: Any, source: _Source) -> Any:
        for key in ("data_files", "config_name", "revision", "builder_options"):
            if getattr(self.config, key) not in (None, {}):
                raise ConfigError(
                    f"does not apply to {source.target}, a directory written by save_to_disk; "
                    "remove it",
                    key_path=f"dataset.{key}",
                )
        try:
            loaded = datasets.load_from_disk(source.target)
        except Exception as error:
            raise _load_error(source, error) from error
        if isinstance(loaded, datasets.DatasetDict):
            if self.config.split not in loaded:
                raise ConfigError(
                    f"no split {self.config.split!r} in {source.target}; available splits: "
                    f"{', '.join(loaded)}",
                    key_path="dataset.split",
                )
            loaded = loaded[self.config.split]
        # A single saved Dataset has no splits: it is used whole and ``split`` is not read.
        return loaded.to_iterable_dataset() if self.config.streaming else loaded

    def _split_error(self, datasets: Any, source: _Source, text: str) -> ConfigError:
        try:
            names = datasets.get_dataset_split_names(
                source.target,
                self.config.config_name,
                data_files=source.data_files,
                revision=self.config.revision,
            )
        except Exception:
            detail = f"({text})"
        else:
            detail = f"available splits: {', '.join(names)}"
        return ConfigError(
            f"no split {self.config.split!r} in {self._label}; {detail}", key_path="dataset.split"
        )


# -- resolving the source ---------------------------------------------------------------


def _builders() -> frozenset[str]:
    try:
        module = importlib.import_module("datasets.packaged_modules")
        return frozenset(module._PACKAGED_DATASETS_MODULES)
    except (ImportError, AttributeError):
        return _KNOWN_BUILDERS


def _resolve_source(config: HFTextDatasetConfig) -> _Source:
    base = Path(config.base_dir).expanduser()
    local = (base / Path(config.path).expanduser()).resolve()
    if config.path in _builders():
        if config.data_files is None:
            raise ConfigError(
                f"the {config.path!r} builder reads data_files; set data_files to a list of "
                "files or glob patterns",
                key_path="dataset.data_files",
            )
        files = _map_files(config.data_files, lambda entry: _resolve_data_file(entry, base))
        return _Source("builder", config.path, files, local)
    data_files = _map_files(config.data_files, str) if config.data_files is not None else None
    if local.is_file():
        raise ConfigError(
            f"{local} is a file; set path to its builder (text, json, csv, parquet, ...) and "
            "data_files to the file",
            key_path="dataset.path",
        )
    if local.is_dir():
        if _is_saved_dataset(local):
            return _Source("saved", str(local), None, local)
        return _Source("local", str(local), data_files, local)
    if _HUB_NAME.fullmatch(config.path) and not config.path.startswith("."):
        return _Source("hub", config.path, data_files, local)
    raise ConfigError(f"{local}: no such file or directory; fix the path", key_path="dataset.path")


def _map_files(
    data_files: tuple[str, ...] | dict[str, tuple[str, ...]], each: Callable[[str], str]
) -> list[str] | dict[str, list[str]]:
    """``data_files`` in ``load_dataset``'s form, ``each`` applied to every entry."""
    if isinstance(data_files, dict):
        return {split: [each(entry) for entry in files] for split, files in data_files.items()}
    return [each(entry) for entry in data_files]


def _resolve_data_file(entry: str, base: Path) -> str:
    if "://" in entry:  # a URL (hf://, https://, s3://) is read as it is
        return entry
    expanded = Path(entry).expanduser()
    return str(expanded if expanded.is_absolute() else (base / expanded).resolve())


def _is_saved_dataset(directory: Path) -> bool:
    return (
        all((directory / name).is_file() for name in _SAVED_DATASET_FILES)
        or (directory / _SAVED_DATASET_DICT_FILE).is_file()
    )


# -- the Hub ----------------------------------------------------------------------------


def _offline() -> bool:
    """Whether ``datasets`` runs in offline mode (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``)."""
    import datasets

    return bool(
        getattr(datasets.config, "HF_HUB_OFFLINE", False)
        or getattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    )


def _hub_endpoint() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.ENDPOINT)
    except (ImportError, AttributeError):
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _unreachable(endpoint: str, timeout: float = _HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why ``endpoint`` (or the proxy in front of it) takes no TCP connection; ``None`` if it does.

    ``datasets`` retries an unreachable Hub for about half a minute before failing; this
    probe fails in at most ``timeout`` seconds (plus name resolution).
    """
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host = proxy_parts.hostname or host
        port = proxy_parts.port or 80
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as error:
        return f"cannot connect to {host}:{port} ({error.strerror or error})"


def _check_hub_reachable(config: HFTextDatasetConfig, local: Path) -> None:
    """Fail at once, with the pre-download recipe, when the Hub cannot be reached.

    In offline mode ``datasets`` itself fails at once (or loads a cached copy), so nothing is
    probed.
    """
    if _offline():
        return
    endpoint = _hub_endpoint()
    reason = _unreachable(endpoint)
    if reason is not None:
        raise _hub_error(
            config,
            f"the Hub ({endpoint}) is unreachable: {reason}",
            local,
            hint="; if it is already in the Hugging Face cache, set HF_HUB_OFFLINE=1 to use that",
        )


def _hub_error(
    config: HFTextDatasetConfig, reason: str, local: Path, *, hint: str = ""
) -> ConfigError:
    args = [repr(config.path)]
    if config.config_name is not None:
        args.append(repr(config.config_name))
    if config.revision is not None:
        args.append(f"revision={config.revision!r}")
    if config.data_files is not None:
        args.append(f"data_files={list(config.data_files)!r}")
    recipe = f"datasets.load_dataset({', '.join(args)}).save_to_disk('DIR')"
    return ConfigError(
        f"{config.path!r} is not a local directory ({local} does not exist) and cannot be "
        f"loaded from the Hugging Face Hub: {reason}. Pre-download it on a machine with network "
        f'access: python -c "import datasets; {recipe}", copy DIR here and set dataset.path to '
        f"DIR (dataset.split then picks the split){hint}",
        key_path="dataset.path",
    )


# -- messages ---------------------------------------------------------------------------


def _describe(source: _Source) -> str:
    """``/data/saved``, ``owner/name`` or ``json files /data/a.jsonl (and 2 more)``."""
    if source.kind != "builder" or not source.data_files:
        return source.target
    files = (
        [entry for entries in source.data_files.values() for entry in entries]
        if isinstance(source.data_files, dict)
        else source.data_files
    )
    more = len(files) - 1
    return f"{source.target} files {files[0]}" + (f" (and {more} more)" if more else "")


def _message(error: BaseException) -> str:
    """The error's text, with the text of its cause when the error itself says little."""
    text = " ".join(str(error).split()) or type(error).__name__
    cause = error.__cause__ or error.__context__
    if cause is not None and str(cause).strip() and str(cause) not in text:
        text += f" ({type(cause).__name__}: {' '.join(str(cause).split())})"
    return text[:1000]


def _load_error(source: _Source, error: BaseException) -> ConfigError:
    return ConfigError(
        f"{_describe(source)}: cannot be loaded: {type(error).__name__}: {_message(error)}",
        key_path="dataset.path",
    )
