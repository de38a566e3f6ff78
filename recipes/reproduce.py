"""Reproduce the README's table row by row: fit each recipe's run (or carry it on), then score it.

    nohup python recipes/reproduce.py recipes/mnist-vampprior.toml recipes/mnist-hvae.toml \\
        --runs ~/pyrovae-runs --data-dir ../shared/data > ~/pyrovae-runs/reproduce.log 2>&1 &

One run at a time, in order, each in a fresh process, by exactly the commands the README gives:
``cli.py fit --config RECIPE --out RUNS/NAME`` for a run not begun (``fit --resume RUNS/NAME`` for one
that has a checkpoint: exact, and a finished run stops at once), then ``cli.py evaluate RUNS/NAME
--num-samples 5000`` unless ``evaluation.json`` already scores its latest checkpoint. Each command's
output is appended to ``RUNS/NAME.log``; the first that fails stops the rest. Stopped (a session's end,
Ctrl-C), the same command later carries on where it left off.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

CLI = Path(__file__).resolve().parents[1] / "cli.py"


def scored(run: Path) -> bool:
    """Whether ``evaluation.json`` is newer than the checkpoint ``evaluate`` scores (the best one)."""
    evaluation = run / "evaluation.json"
    checkpoints = [p for p in (run / "checkpoint-best.pt", run / "checkpoint.pt") if p.exists()]
    return evaluation.exists() and evaluation.stat().st_mtime >= checkpoints[0].stat().st_mtime


@click.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--runs", type=click.Path(file_okay=False), default="~/pyrovae-runs", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="  [default: $PYROVAE_DATA]")
@click.option("--num-samples", type=click.IntRange(min=1), default=5000, show_default=True)
def main(recipes: tuple[str, ...], runs: str, data_dir: str | None, num_samples: int) -> None:
    root = Path(runs).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise click.ClickException(f"cannot make {root} ({e.strerror})") from None
    data = ("--data-dir", data_dir) if data_dir is not None else ()
    for recipe in map(Path, recipes):
        run = root / recipe.stem
        steps = [
            ("fit", "--resume", str(run))
            if (run / "checkpoint.pt").exists()
            else ("fit", "--config", str(recipe), "--out", str(run), *data)
        ]
        steps.append(("evaluate", str(run), "--num-samples", str(num_samples), *data))
        for step in steps:
            if step[0] == "evaluate" and scored(run):
                click.echo(f"{run} is scored already (evaluation.json is newer than its checkpoint)")
                continue
            command = [sys.executable, str(CLI), *step]
            click.echo(" ".join(command))
            with open(root / f"{recipe.stem}.log", "a") as log:
                code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
            if code != 0:
                click.echo(f"error: exit {code}; see {root / f'{recipe.stem}.log'}", err=True)
                sys.exit(code)


if __name__ == "__main__":
    main()
