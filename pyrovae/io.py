"""Run-directory files, each written atomically: a temporary file in the same folder, then a rename."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from .config import TrainConfig
from .errors import UserError

CHECKPOINT = "checkpoint.pt"
BEST_CHECKPOINT = "checkpoint-best.pt"
CONFIG = "config.json"
METRICS = "metrics.csv"
# valid_elbo is empty for a run without a validation split.
METRIC_COLUMNS = ("epoch", "train_elbo", "valid_elbo", "test_elbo", "seconds")
_FORMAT = "pyrovae-checkpoint"
_VERSION = 1


def _special(path: Path) -> bool:
    """Whether ``path`` is a device, pipe or socket: neither a plain file nor a folder."""
    return path.exists() and not path.is_file() and not path.is_dir()


def _replaceable(path: Path) -> Path:
    """The file a write to ``path`` replaces: the end of its symbolic links (so that a link keeps
    pointing at the new file), refused with an ``OSError`` where it is a device, pipe or socket, which a
    rename would replace with a plain file (``--out /dev/stdout``, as root ``/dev/null``)."""
    target = Path(os.path.realpath(path))
    if _special(target):  # a folder: open() says so
        raise OSError(errno.EINVAL, "not a regular file (pyrovae writes files whole, by a rename)", str(path))
    return target


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path`` (beside its target, for a symbolic
    link), then rename it over that."""
    asked, path = path, _replaceable(Path(path))
    # The pid keeps concurrent writers apart; open() (unlike mkstemp) honours the umask.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename == str(tmp):  # name the file asked for, not ours
            raise OSError(e.errno, e.strerror, str(asked)) from None
        raise


def check_writable(*paths: Path) -> None:
    """Raise the ``OSError`` that writing ``paths`` would raise later (a folder in a file's place, a
    folder that takes no new file), so that a long job fails before it starts, not after."""
    for path in paths:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    for folder in {_replaceable(path).parent for path in paths}:
        probe = folder / f".probe.{os.getpid()}.tmp"
        try:
            open(probe, "wb").close()
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(folder)) from None
        probe.unlink()


def read_text(path: Path) -> str:
    """The text of ``path``, refused with an ``OSError`` where it is a pipe, device or socket, whose
    reading waits on a writer that may never come (a run's files are plain files)."""
    if _special(Path(path)):
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    with open(path, newline="") as f:
        return f.read()


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_config(run_dir: Path, config: TrainConfig) -> None:
    write_text(run_dir / CONFIG, json.dumps(config.to_dict(), indent=2) + "\n")


def write_metrics(run_dir: Path, rows: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    write_text(run_dir / METRICS, buf.getvalue())


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    rows = csv.DictReader(io.StringIO(read_text(Path(run_dir) / METRICS)))
    return [{k: float(v) if v != "" else None for k, v in row.items()} for row in rows]


def save_checkpoint(path: Path, config: TrainConfig, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, numbers, strings, nested dicts and lists) with the run's config.

    The config goes in as plain JSON types, so the file rebuilds the model on its own and loads with
    ``torch.load(weights_only=True)``: loading a checkpoint never runs code.
    """
    payload = {
        "format": _FORMAT,
        "version": _VERSION,
        "config": json.loads(json.dumps(config.to_dict())),
        **state,
    }
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> tuple[TrainConfig, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`; any other file is a :class:`UserError`."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"no checkpoint at {path}: it is a folder")
    if _special(path):  # a pipe, device or socket: say so, not just that no checkpoint is here
        raise UserError(f"no checkpoint at {path}: not a regular file")
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path} is not a readable pyrovae checkpoint ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise UserError(f"{path} is not a pyrovae checkpoint")
    if payload.get("version") != _VERSION:
        raise UserError(f"{path} has checkpoint version {payload.get('version')}, expected {_VERSION}")
    try:
        config = TrainConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as e:
        raise UserError(f"{path} holds an invalid config: {e}") from None
    return config, payload
