"""``--resume`` without ``run.run_name``: find the run to continue.

The candidates are the directories of ``run.artifacts_root`` whose ``run_config.json`` records
this experiment's ``run.project_name``. The newest is the one whose files were written last
(the latest modification time of any file directly in it: checkpoints, ``metrics.jsonl``,
``run_config.json``), i.e. the run that was last active, whatever its name.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from baseline.config import ExperimentConfig
from baseline.errors import ConfigError
from baseline.runs.layout import RunDirectory

log = logging.getLogger("baseline")


def project_runs(artifacts_root: Path, project_name: str) -> list[Path]:
    """Run directories under ``artifacts_root`` of ``project_name``, newest first."""
    if not artifacts_root.is_dir():
        return []
    runs = [
        child
        for child in artifacts_root.iterdir()
        if not child.name.startswith(".") and child.is_dir() and _project_of(child) == project_name
    ]
    return sorted(runs, key=_last_written, reverse=True)


def newest_run_name(config: ExperimentConfig) -> str:
    """The name of the newest run of ``config``'s project, logged with the other candidates."""
    root = Path(config.run.artifacts_root)
    project = config.run.project_name
    runs = project_runs(root, project)
    if not runs:
        raise ConfigError(
            f"no run of project {project!r} in {root} to resume; start one without --resume, "
            "or set run.run_name to the run directory's name",
            key_path="run.resume_from_checkpoint",
        )
    if len(runs) == 1:
        log.info("resuming run %r, the only run of project %r in %s", runs[0].name, project, root)
    else:
        log.info(
            "resuming run %r, the newest of %d runs of project %r in %s (others: %s); set "
            "run.run_name to pick another",
            runs[0].name,
            len(runs),
            project,
            root,
            ", ".join(run.name for run in runs[1:]),
        )
    return runs[0].name


def _project_of(run_dir: Path) -> str | None:
    try:
        data = json.loads(RunDirectory(run_dir).run_config.read_text(encoding="utf-8"))
        project = data["config"]["run"]["project_name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return project if isinstance(project, str) else None


def _last_written(run_dir: Path) -> float:
    times = []
    for child in run_dir.iterdir():
        try:  # a file may be replaced or removed while the directory is listed
            if child.is_file():
                times.append(child.stat().st_mtime)
        except OSError:
            continue
    try:
        return max(times, default=run_dir.stat().st_mtime)
    except OSError:
        return 0.0
