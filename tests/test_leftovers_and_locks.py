"""What a process killed with SIGKILL leaves behind is removed by the next holder of the lock
that guarded it, and said so in one line; a live writer's files are never touched. Locks on a
filesystem without ``flock`` and locks held too long are one-line errors naming the fix."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from core_support import write_toml

from baseline.data.token_cache import load_or_build, segment_scratch
from baseline.errors import BaselineError, LockError
from baseline.runs import artifacts, layout, locks
from baseline.runs.artifacts import atomic_write_with
from baseline.runs.locks import run_directory_lock, waiting_lock
from baseline.testing import RecordingTokenizer, RecordingTokenizerConfig

BIN = Path(sys.executable).parent
SEGMENTS = [f"segment {i} with some text" for i in range(20)]

#: Dies (SIGKILL) in the middle of writing: ``checkpoint RUN_DIR`` a large checkpoint under the
#: run lock, ``cache ROOT`` a token-cache entry under its lock, ``scratch ROOT`` in the
#: segment-sizes scratch. With ``hold`` instead of dying it reports and sleeps (a live writer).
WRITER = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from baseline.data.token_cache import load_or_build, segment_scratch
    from baseline.runs.artifacts import atomic_write_with
    from baseline.runs.locks import run_directory_lock
    from baseline.testing import RecordingTokenizer, RecordingTokenizerConfig

    what, where, then = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

    def stop():
        print("writing", flush=True)
        if then == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(600)

    if what == "checkpoint":
        def write(handle):
            handle.write(os.urandom(8 << 20))
            handle.flush()
            stop()
        with run_directory_lock(where):
            atomic_write_with(where / "baseline_checkpoint.pt", write)
    elif what == "cache":
        def segments():
            yield "some text"
            stop()
        tokenizer = RecordingTokenizer(RecordingTokenizerConfig(record_path=str(where / "r")))
        load_or_build(where, "k" * 32, segments, tokenizer)
    else:
        with segment_scratch(where) as scratch:
            (scratch / "segment_bytes.raw").write_bytes(b"x" * 4096)
            stop()
    """
)


def writer(what: str, where: Path, then: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, what, str(where), then],
        text=True,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stdout.readline() == "writing\n"
    if then == "die":
        assert process.wait(timeout=60) == -signal.SIGKILL
    return process


def stop(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait(timeout=60)


def run(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BASELINE_DEBUG"}
    return subprocess.run(
        [str(BIN / "baseline-run"), "exp.toml", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def leftover_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "of an interrupted process: " in line]


def test_a_resume_removes_what_a_killed_save_and_measure_left_and_says_so(
    tmp_path: Path, tiny_data: dict[str, Any]
) -> None:
    tiny_data["train"].update(max_steps=4, epochs=30)
    write_toml(tmp_path / "exp.toml", tiny_data)
    first = run(tmp_path)
    assert first.returncode == 0, first.stderr
    assert not leftover_lines(first.stderr)
    run_dir = tmp_path / "runs" / "tiny"
    cache = tmp_path / "runs" / ".token_cache"

    writer("checkpoint", run_dir, "die")  # killed while writing a checkpoint, under the lock
    writer("scratch", cache, "die")  # killed while measuring segments
    temporary = list(run_dir.glob(".baseline_checkpoint.pt.*.tmp"))
    assert len(temporary) == 1 and temporary[0].stat().st_size >= 8 << 20
    scratch = list(cache.glob(".segment-sizes-*"))
    assert len(scratch) == 1 and scratch[0].is_dir()

    resumed = run(tmp_path, "--resume", "--set", "train.max_steps=6")
    assert resumed.returncode == 0, resumed.stderr
    assert "at step 4 " in resumed.stderr
    lines = leftover_lines(resumed.stderr)
    assert len(lines) == 2, resumed.stderr
    assert (
        f"removed 1 leftover of an interrupted process: {temporary[0].name} (in {run_dir})"
        in (lines[0])
    )
    assert f"removed 1 leftover of an interrupted process: {scratch[0].name}" in lines[1]
    assert not temporary[0].exists() and not scratch[0].exists()
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []


def test_the_next_builder_of_a_cache_entry_removes_a_killed_builders_staging(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    writer("cache", cache, "die")
    staging = [p for p in cache.iterdir() if p.is_dir()]
    assert len(staging) == 1 and staging[0].name.startswith("." + "k" * 32 + ".")
    tokenizer = RecordingTokenizer(RecordingTokenizerConfig(record_path=str(tmp_path / "r")))
    with caplog.at_level(logging.INFO, logger="baseline"):
        _, hit = load_or_build(cache, "k" * 32, lambda: iter(SEGMENTS), tokenizer)
    assert not hit
    messages = [r.getMessage() for r in caplog.records if "interrupted process" in r.getMessage()]
    assert messages == [
        f"removed 1 leftover of an interrupted process: {staging[0].name} (in {cache})"
    ]
    assert sorted(p.name for p in cache.iterdir()) == ["." + "k" * 32 + ".lock", "k" * 32]


def test_a_live_writers_files_are_never_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    saving = writer("checkpoint", run_dir, "hold")
    try:  # a run saving a checkpoint holds the run lock: nobody else cleans its directory
        temporary = list(run_dir.glob(".baseline_checkpoint.pt.*.tmp"))
        assert len(temporary) == 1
        with (
            pytest.raises(BaselineError, match="is in use by process"),
            run_directory_lock(run_dir),
        ):
            pass
        assert temporary[0].is_file()
    finally:
        stop(saving)
    cache = tmp_path / "cache"
    live = writer("scratch", cache, "hold")
    builder = writer("cache", cache, "hold")
    try:
        theirs = sorted(p for p in cache.iterdir() if p.is_dir())
        assert len(theirs) == 2
        # Another process measures at the same time: the live scratch stays.
        with caplog.at_level(logging.INFO, logger="baseline"), segment_scratch(cache) as mine:
            assert mine.is_dir() and all(path.is_dir() for path in theirs)
        # Another process wants the entry being built: it waits (naming the builder), then
        # gives up without touching the builder's staging directory.
        tokenizer = RecordingTokenizer(RecordingTokenizerConfig(record_path=str(tmp_path / "r")))
        with (
            caplog.at_level(logging.INFO, logger="baseline"),
            locks.lock_wait_limit(0.5),
            pytest.raises(LockError) as raised,
        ):
            load_or_build(cache, "k" * 32, lambda: iter(SEGMENTS), tokenizer)
        assert all(path.is_dir() for path in theirs)
        assert not [r for r in caplog.records if "interrupted process" in r.getMessage()]
        message = str(raised.value)
        assert "\n" not in message and raised.value.exit_code == 2
        assert message.startswith(f"{cache / ('.' + 'k' * 32 + '.lock')}: still held by ")
        assert f"process {builder.pid} on " in message
        assert message.endswith(
            "after waiting 0.5s; wait for that process to finish or stop "
            "it, or raise run.lock_timeout_s"
        )
        waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting")]
        assert len(waits) == 1 and f"held by process {builder.pid} on " in waits[0]
    finally:
        stop(live)
        stop(builder)


HOLD_VOCAB_LOCK = """
import sys, time
from pathlib import Path
from baseline.runs.locks import waiting_lock
with waiting_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_run_waiting_for_a_vocab_lock_names_the_holder_and_gives_up_in_time(
    tmp_path: Path, tiny_data: dict[str, Any]
) -> None:
    tiny_data["run"]["lock_timeout_s"] = 1
    write_toml(tmp_path / "exp.toml", tiny_data)
    lock = tmp_path / "bpe.json.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_VOCAB_LOCK, str(lock)], text=True, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        started = time.monotonic()
        result = run(tmp_path)
        assert time.monotonic() - started < 60
    finally:
        stop(holder)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"waiting for {lock}, held by process {holder.pid} on " in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"error: tokenizer 'bpe' from baseline-bpe: {lock}: still held by process {holder.pid} on "
    ), last
    assert last.endswith(
        "after waiting 1s; wait for that process to finish or stop it, or raise run.lock_timeout_s"
    ), last


def no_flock(errno_value: int) -> Any:
    def flock(fd: int, operation: int) -> None:
        raise OSError(errno_value, os.strerror(errno_value))

    return flock


@pytest.mark.parametrize("errno_value", [errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_filesystem_without_flock_is_one_line_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, errno_value: int
) -> None:
    monkeypatch.setattr(locks.fcntl, "flock", no_flock(errno_value))
    run_dir = tmp_path / "runs" / "tiny"
    with pytest.raises(BaselineError) as raised, run_directory_lock(run_dir):
        pass
    assert str(raised.value) == (
        f"{tmp_path / 'runs' / '.tiny.lock'}: cannot lock this file, its filesystem does not "
        f"support file locks ({os.strerror(errno_value)}); set run.artifacts_root to a "
        "directory on a local disk"
    )
    assert raised.value.exit_code == 2
    vocab_lock = tmp_path / "bpe.json.lock"
    with (
        pytest.raises(LockError) as raised,
        waiting_lock(vocab_lock, setting="tokenizer.vocab_path"),
    ):
        pass
    assert str(raised.value).startswith(f"{vocab_lock}: cannot lock this file")
    assert str(raised.value).endswith("; set tokenizer.vocab_path to a place on a local disk")
    no_cache_lock = pytest.raises(LockError, match=r"set run.token_cache_dir to a place on a local")
    with no_cache_lock, segment_scratch(tmp_path / "cache"):
        pass


def test_a_filesystem_without_flock_stops_a_run_with_one_line(
    tmp_path: Path,
    tiny_data: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from baseline.cli import run_main

    write_toml(tmp_path / "exp.toml", tiny_data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BASELINE_DEBUG", raising=False)
    monkeypatch.setattr(locks.fcntl, "flock", no_flock(errno.ENOLCK))
    assert run_main(["exp.toml"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"error: {Path('runs').absolute() / '.tiny.lock'}: cannot lock this file, its "
        f"filesystem does not support file locks ({os.strerror(errno.ENOLCK)}); set "
        "run.artifacts_root to a directory on a local disk"
    )


# -- atomic writes interrupted in-process -------------------------------------------------------


@pytest.mark.parametrize("where", ["writing", "before the rename"])
def test_a_keyboard_interrupt_in_an_atomic_write_leaves_no_temporary_file(
    tmp_path: Path, where: str
) -> None:
    target = tmp_path / "baseline_checkpoint.pt"
    target.write_bytes(b"old")

    def interrupt(*_args: Any) -> None:
        raise KeyboardInterrupt

    writer = interrupt if where == "writing" else lambda handle: handle.write(b"new")
    with pytest.raises(KeyboardInterrupt):
        atomic_write_with(target, writer, before_replace=None if where == "writing" else interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline_checkpoint.pt"]
    assert target.read_bytes() == b"old"


def test_an_atomic_write_has_the_usual_mode_and_leaves_a_file_of_its_name_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "run_config.json"
    atomic_write_with(target, lambda handle: handle.write(b"{}"))
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600

    # a file that happens to have the temporary name is neither used nor removed
    monkeypatch.setattr(artifacts.secrets, "token_hex", lambda _n: "taken")
    taken = tmp_path / f".run_config.json.taken{layout.TEMPORARY_FILE_SUFFIX}"
    taken.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        atomic_write_with(target, lambda handle: handle.write(b"[]"))
    assert taken.read_bytes() == b"someone else's" and target.read_bytes() == b"{}"
