"""Read event files back with TensorBoard's own reader (``EventAccumulator``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

#: Load everything: the default size guidance samples scalars down to 10,000 per tag.
EVERYTHING = {"scalars": 0, "tensors": 0}


@attrs.frozen
class TensorBoardRun:
    """What TensorBoard shows for one directory of event files (purges applied)."""

    path: Path
    #: tag -> [(step, value), ...] in the order TensorBoard keeps them.
    scalars: dict[str, list[tuple[int, float]]]
    #: The normalized config from the text plugin (the JSON inside the Markdown code block).
    config_text: Any
    #: HParams plugin data by tag (``_hparams_/experiment``, ``..._start_info``, ``..._end_info``).
    hparams: dict[str, HParamsPluginData]

    @property
    def tags(self) -> set[str]:
        return set(self.scalars)

    def steps(self, tag: str) -> list[int]:
        return [step for step, _ in self.scalars[tag]]

    def value(self, tag: str, step: int) -> float:
        found = [value for s, value in self.scalars[tag] if s == step]
        assert len(found) == 1, (tag, step, found)
        return found[0]

    def by_step(self) -> dict[int, set[str]]:
        """step -> the tags with a value at that step."""
        rows: dict[int, set[str]] = {}
        for tag, points in self.scalars.items():
            for step, _ in points:
                rows.setdefault(step, set()).add(tag)
        return rows

    @property
    def hparam_values(self) -> dict[str, Any]:
        start = self.hparams["_hparams_/session_start_info"].session_start_info
        out: dict[str, Any] = {}
        for key, value in start.hparams.items():
            kind = value.WhichOneof("kind")
            out[key] = getattr(value, kind)
        return out

    @property
    def status(self) -> str:
        from tensorboard.plugins.hparams.api_pb2 import Status

        end = self.hparams["_hparams_/session_end_info"].session_end_info
        return str(Status.Name(end.status))


def read_events(path: Path) -> TensorBoardRun:
    """The scalars, config text and hparams of the event files directly in ``path``."""
    accumulator = EventAccumulator(str(path), size_guidance=EVERYTHING)
    accumulator.Reload()
    tags = accumulator.Tags()
    scalars = {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in tags["scalars"]
    }
    config_text = None
    if "config/text_summary" in tags["tensors"]:
        events = accumulator.Tensors("config/text_summary")
        markdown = events[-1].tensor_proto.string_val[0].decode("utf-8")
        config_text = json.loads("\n".join(line[4:] for line in markdown.splitlines()))
    hparams = {}
    try:
        content = accumulator.PluginTagToContent("hparams")
    except KeyError:
        content = {}
    for tag, data in content.items():
        hparams[tag] = HParamsPluginData.FromString(data)
    return TensorBoardRun(path, scalars, config_text, hparams)
