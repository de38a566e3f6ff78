"""Whether run B beats run A: their log p(x) image by image, on the same images, with standard errors.

A difference of two means over the same test images is a mean of per-image differences; its standard
error over images is ``sd(d) / sqrt(n)``, far smaller than the runs' own standard errors over images
when both rank the images alike, as models of one data set do.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from .errors import UserError
from .evaluate import evaluation_files
from .io import read_text

# What two evaluations must share to be compared image by image.
SAME = ("dataset", "split", "num_points", "data")


def read_evaluation(
    run_dir: str | Path, split: str = "test", num_points: int | None = None
) -> tuple[dict[str, Any], list[int], list[float]]:
    """The summary and the per-image ``(index, log_px)`` columns of a run scored on ``split`` (on its
    first ``num_points`` images, where given)."""
    run_dir = Path(run_dir)
    summary_file, images_file = evaluation_files(split, num_points)
    try:
        summary = json.loads(read_text(run_dir / summary_file))
        rows = list(csv.DictReader(io.StringIO(read_text(run_dir / images_file))))
        index = [int(r["index"]) for r in rows]
        log_px = [float(r["log_px"]) for r in rows]
        if not isinstance(summary, dict):
            raise ValueError(f"{summary_file} holds no summary")
        stderr = summary.get("log_px_stderr", math.nan)
        if isinstance(stderr, bool) or not isinstance(stderr, (int, float)):
            raise ValueError(f"{summary_file} gives a log_px_stderr of {stderr!r}, not a number")
        summary["log_px_stderr"] = float(stderr)  # an integer of 400 digits: OverflowError
        if not rows:
            raise ValueError(f"{images_file} has no rows")
        for i, value in zip(index, log_px, strict=True):
            if not math.isfinite(value):  # a diverged model's score; no mean or difference is made of it
                raise ValueError(f"{images_file} gives image {i} a log p(x) of {value}")
    except FileNotFoundError as e:
        raise UserError(
            f"{run_dir} has no {Path(e.filename).name}: score it with evaluate --split {split}"
            + (f" --num-points {num_points}" if num_points is not None else "")
            + " first"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, OverflowError) as e:  # a folder for a file, bytes, ...
        raise UserError(f"{run_dir}: its evaluation files cannot be read ({e})") from None
    return summary, index, log_px


def compare_runs(
    run_dirs: list[str | Path], split: str = "test", num_points: int | None = None
) -> list[dict[str, Any]]:
    """One row a run: its mean log p(x) and standard errors; for each run after the first, the paired
    difference of mean log p(x) against the first (``diff``, positive when the run is better) and its
    standard error over images (``diff_stderr``). ``num_points``: their scores of the split's first N
    images (``evaluate --num-points N``)."""
    if len(run_dirs) < 2:
        raise UserError("compare needs at least two runs")
    first, first_index, first_log_px = read_evaluation(run_dirs[0], split, num_points)
    rows = []
    for run_dir in run_dirs:
        summary, index, log_px = read_evaluation(run_dir, split, num_points)
        # The validation and train splits are the same images only for runs that held out as many.
        for key in SAME + (("held_out",) if first.get("split") != "test" else ()):
            if summary.get(key) != first.get(key):
                raise UserError(
                    f"{run_dir} was scored on other images than {run_dirs[0]} ({key}: "
                    f"{summary.get(key)!r} against {first.get(key)!r}); evaluate both on the same split"
                )
        if index != first_index:
            raise UserError(f"{run_dir} was scored on other images than {run_dirs[0]} (their indices differ)")
        n = len(log_px)
        row = {
            "run": str(run_dir),
            "log_px": sum(log_px) / n,
            "log_px_stderr": summary["log_px_stderr"],
            "log_px_stderr_images": _stderr(log_px),
            "num_samples": summary.get("num_samples"),
        }
        if rows:
            d = [b - a for a, b in zip(first_log_px, log_px, strict=True)]
            row.update(diff=sum(d) / n, diff_stderr=_stderr(d))
        rows.append(row)
    return rows


def _stderr(values: list[float]) -> float:
    n = len(values)
    if n < 2:
        return math.nan
    mean = sum(values) / n
    squares = sum((v - mean) * (v - mean) for v in values)  # past 1e154 inf, where ** 2 raises
    return math.sqrt(squares / (n - 1) / n)


def _figure(value: float, sign: str = "") -> str:
    """Nats to three decimals; in powers of ten past a billion (what no real score reaches)."""
    if math.isfinite(value) and abs(value) >= 1e9:
        return f"{value:{sign}.3e}"
    return f"{value:{sign}.3f}"  # nan and inf print as themselves


def table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """The comparison as aligned text, or as a Markdown table."""
    header = ["run", "log p(x)", "MC s.e.", "s.e. over images", "paired difference vs first", "its s.e."]
    lines = []
    for r in rows:
        diff = "" if "diff" not in r else _figure(r["diff"], "+")
        diff_se = "" if "diff" not in r else _figure(r["diff_stderr"])
        lines.append([r["run"], _figure(r["log_px"]), _figure(r["log_px_stderr"]),
                      _figure(r["log_px_stderr_images"]), diff, diff_se])  # fmt: skip
    if markdown:
        out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
        return "\n".join(out + ["| " + " | ".join(line) + " |" for line in lines])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=True)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True))
                     for line in [header, *lines])  # fmt: skip
