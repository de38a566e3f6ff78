"""Reproduce the README's table row by row: fit each recipe's run (or carry it on), then score it.

    nohup python recipes/reproduce.py recipes/{mnist,fashionmnist}-{vae,vampprior,hvae,iaf}.toml \\
        --runs ~/pyrovae-runs --carried recipes/carried --data-dir ../shared/data \\
        >> ~/pyrovae-runs/reproduce.log 2>&1 &

One run at a time, in order, each in a fresh process, by exactly the commands the README gives:
``cli.py fit --config RECIPE --out RUNS/NAME`` for a run not begun (``fit --resume RUNS/NAME`` for one
that has a checkpoint: exact, and a finished run stops at once), then ``cli.py evaluate RUNS/NAME
--num-samples 5000`` unless ``evaluation.json`` already scores its latest checkpoint. Each command's
output is appended to ``RUNS/NAME.log``; the first that fails stops the rest. Stopped (a session's end,
Ctrl-C), the same command later carries on where it left off. ``--status`` runs nothing and prints
where each recipe's run stands, as a Markdown table (what the README's table is filled from).

A machine laid anew loses ``RUNS``: ``--park DIR`` copies each recipe's run (and its log) into ``DIR``
(``recipes/carried``, committed at a session's end), while the run goes on; ``--carried DIR`` starts
a run missing from ``RUNS`` from ``DIR``'s copy, so ``fit --resume`` carries it on where it was parked.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pyrovae, run from anywhere
from pyrovae import io, runs  # noqa: E402
from pyrovae.config import TrainConfig, read_config_file  # noqa: E402
from pyrovae.errors import UserError  # noqa: E402
from pyrovae.evaluate import evaluation_files  # noqa: E402

CLI = Path(__file__).resolve().parents[1] / "cli.py"
SUMMARY = evaluation_files("test")[0]  # the whole test set's scores, what a row reports


def current_scores(run: Path, metrics: list[dict[str, float]], num_samples: int) -> dict | None:
    """``evaluation.json``'s scores where they score, at ``num_samples``, the epoch of the checkpoint
    ``evaluate`` scores now (the best one, where the run keeps one; else the last); None otherwise. By
    the epochs, not the files' times, which a copy or a clone of a carried run rewrites."""
    if not (run / SUMMARY).exists():
        return None
    evaluation = json.loads(io.read_text(run / SUMMARY))
    best = runs.best_epoch(metrics)
    epoch = best if best is not None and (run / io.BEST_CHECKPOINT).exists() else len(metrics)
    wanted = {"checkpoint": "best", "epoch": epoch, "num_samples": num_samples}
    return evaluation if {key: evaluation.get(key) for key in wanted} == wanted else None


def status(run: Path, num_samples: int) -> list[str]:
    """A table row: epochs trained, the best validation ELBO, whether training is over, the hours of
    the ``seconds`` column (training alone, and any pause of the process), and the scored log p(x)."""
    try:
        return _status(run, num_samples)
    except FileNotFoundError:
        return ["0", "", "not started", "", "", ""]
    except (OSError, ValueError, TypeError, KeyError) as e:  # a run dir written by hand, or half copied
        return ["", "", f"unreadable ({e!r})", "", "", ""]


def _status(run: Path, num_samples: int) -> list[str]:
    config = TrainConfig.from_dict(json.loads(io.read_text(run / io.CONFIG)))
    metrics = io.read_metrics(run)
    if not metrics:
        if (run / io.CHECKPOINT).exists():  # metrics.csv spoiled by hand: the checkpoint keeps its rows
            state = "metrics.csv holds no epoch, but a checkpoint is here: fit --resume writes it again"
            return ["", "", state, "", "", ""]
        return [f"0 of {config.epochs}", "", "not started", "", "", ""]
    best = runs.best_epoch(metrics)
    seconds = [m["seconds"] for m in metrics]
    median = statistics.median(seconds)
    if runs.stopped_early(config, metrics):
        state = "stopped early"
    elif len(metrics) >= config.epochs:
        state = "finished"
    elif config.early_stopping is None:  # a fixed number of epochs: how long the rest takes, at this pace
        left = config.epochs - len(metrics)
        state = f"in progress: {left} epochs to go, {left * median / 3600:.1f} h at the median epoch"
    elif best is None:
        state = "in progress"
    elif len(metrics) < config.warmup:  # early stopping waits for the warm-up's end
        state = f"in progress: warm-up, epoch {len(metrics)} of {config.warmup}"
    else:
        waited = runs.epochs_without_improvement(config, metrics)
        state = f"in progress: {waited} of {config.early_stopping} epochs without a better validation ELBO"
    scores = current_scores(run, metrics, num_samples)
    return [
        f"{len(metrics)} of {config.epochs}",
        f"{metrics[best - 1]['valid_elbo']:.2f} (epoch {best})" if best is not None else "",
        state,
        f"{sum(seconds) / 3600:.2f}",
        f"{median:.1f} s",
        f"{scores['log_px']:.2f} ± {scores['log_px_stderr_images']:.2f}" if scores else "",
    ]


@click.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--runs", "runs_dir", type=click.Path(file_okay=False), default="~/pyrovae-runs", show_default=True
)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="  [default: $PYROVAE_DATA]")
@click.option("--num-samples", type=click.IntRange(min=1), default=5000, show_default=True)
@click.option("--status", "show_status", is_flag=True, help="Run nothing; print where each run stands.")
@click.option(
    "--carried",
    type=click.Path(file_okay=False),
    default=None,
    help="Start a run missing from RUNS from its copy in this directory.",
)
@click.option(
    "--park", type=click.Path(file_okay=False), default=None, help="Run nothing; copy the runs here."
)
def main(
    recipes: tuple[str, ...],
    runs_dir: str,
    data_dir: str | None,
    num_samples: int,
    show_status: bool,
    carried: str | None,
    park: str | None,
) -> None:
    root = Path(runs_dir).expanduser()
    check_recipes(recipes)
    for option, folder in (("--runs", runs_dir), ("--carried", carried), ("--park", park)):
        path = Path(folder).expanduser() if folder is not None else None
        if path is not None and path.exists() and not path.is_dir():  # a file, or /dev/null
            raise click.ClickException(f"{option} {folder} is not a folder")
    try:
        if park is not None:
            for recipe in map(Path, recipes):
                click.echo(park_run(root, Path(park).expanduser(), recipe.stem))
            return
        if show_status:
            print_status(recipes, root, num_samples)
            return
        root.mkdir(parents=True, exist_ok=True)
        data = ("--data-dir", data_dir) if data_dir is not None else ()
        for recipe in map(Path, recipes):
            if carried is not None:
                click.echo(unpark_run(Path(carried).expanduser(), root, recipe.stem))
            carry_on(recipe, root, data, num_samples)
    except OSError as e:  # a folder that cannot be made, read or written
        raise click.ClickException(f"{e.filename or root}: {e.strerror or e}") from None


def check_recipes(recipes: tuple[str, ...]) -> None:
    """Every recipe read before anything runs: a bad one, or two that would share a run directory
    (``RUNS/NAME``, by the file's name), is one line now rather than an error hours into the rows."""
    for recipe in recipes:
        try:
            read_config_file(recipe)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    names = [Path(recipe).stem for recipe in recipes]
    shared = sorted({name for name in names if names.count(name) > 1})
    if shared:
        name = shared[0]
        raise click.ClickException(f"two recipes share the name {name}: their runs would share RUNS/{name}")


def print_status(recipes: tuple[str, ...], root: Path, num_samples: int) -> None:
    """Where each recipe's run in ``root`` stands, as a Markdown table."""
    click.echo("| recipe | epochs | best validation ELBO | training | hours | median epoch | log p(x) |")
    click.echo("| --- | --- | --- | --- | --- | --- | --- |")
    for recipe in map(Path, recipes):
        click.echo("| " + " | ".join([recipe.stem, *status(root / recipe.stem, num_samples)]) + " |")


def park_run(root: Path, dest: Path, name: str, tries: int = 20) -> str:
    """Copy ``root/name`` and its log into ``dest`` while the run goes on: the two checkpoints are
    copied again until they agree (the best one is the best epoch of the last one's metrics: no epoch
    ended between the two copies), and metrics.csv is written from the last checkpoint's own rows."""
    run = root / name
    if not (run / io.CHECKPOINT).exists():
        return f"{run} has no checkpoint: nothing to park"
    staged, reason = dest / f".{name}.parking", "its checkpoints never agreed"
    try:
        for _ in range(tries):
            shutil.rmtree(staged, ignore_errors=True)
            try:  # without the half-written files of io.atomic_write, which may vanish mid-copy
                shutil.copytree(run, staged, ignore=shutil.ignore_patterns(".*.tmp"))
            except (shutil.Error, FileNotFoundError) as e:  # a file of the run's that vanished mid-copy
                reason = f"the copy failed ({e})"
                time.sleep(1.0)
                continue
            _, last = io.load_checkpoint(staged / io.CHECKPOINT)
            best = runs.best_epoch(last["metrics"])
            if best is None or not (staged / io.BEST_CHECKPOINT).exists():
                break
            if int(io.load_checkpoint(staged / io.BEST_CHECKPOINT)[1]["epoch"]) == best:
                break
            time.sleep(1.0)  # an epoch ended between the two checkpoints' copies
        else:
            raise click.ClickException(f"{run} was not parked in {tries} tries: {reason}")
    except BaseException as e:
        shutil.rmtree(staged, ignore_errors=True)
        if isinstance(e, UserError):
            raise click.ClickException(str(e)) from None
        raise
    io.write_metrics(staged, last["metrics"])
    if (root / f"{name}.log").exists():
        shutil.copyfile(root / f"{name}.log", dest / f"{name}.log")
    shutil.rmtree(dest / name, ignore_errors=True)
    staged.rename(dest / name)
    return f"parked {run} at epoch {last['epoch']} in {dest / name}"


def unpark_run(carried: Path, root: Path, name: str) -> str:
    """Copy ``carried/name`` (and its log) into ``root`` where ``root`` has no checkpoint of it."""
    run, copy = root / name, carried / name
    if (run / io.CHECKPOINT).exists():
        return f"{run} is here: carried on from its own checkpoint"
    if not (copy / io.CHECKPOINT).exists():
        return f"{copy} is not parked: {run} starts afresh"
    shutil.copytree(copy, run, dirs_exist_ok=True)
    if (carried / f"{name}.log").exists() and not (root / f"{name}.log").exists():
        shutil.copyfile(carried / f"{name}.log", root / f"{name}.log")
    return f"{run} carried on from {copy}"


def carry_on(recipe: Path, root: Path, data: tuple[str, ...], num_samples: int) -> None:
    """Fit or resume ``recipe``'s run in ``root``, then score it; exit as the first failing command did."""
    run, log = root / recipe.stem, root / f"{recipe.stem}.log"
    if (run / io.CHECKPOINT).exists():
        fit = ("fit", "--resume", str(run))
    else:
        fit = ("fit", "--config", str(recipe), "--out", str(run), *data)
    for step in (fit, ("evaluate", str(run), "--num-samples", str(num_samples), *data)):
        if step[0] == "evaluate" and current_scores(run, io.read_metrics(run), num_samples) is not None:
            click.echo(f"{run} is scored already (evaluation.json scores its checkpoint)")
            continue
        command = [sys.executable, str(CLI), *step]
        click.echo(" ".join(command))
        with open(log, "a") as f:
            code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT).returncode
        if code != 0:
            click.echo(f"error: exit {code}; see {log}", err=True)
            sys.exit(code)


if __name__ == "__main__":
    main()
