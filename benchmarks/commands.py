"""Benchmark: whole commands, each in a fresh process, alternated run after run in one sitting.

(1) ``epoch``: ``cli.py fit --dataset D --epochs 2`` (its ``seconds`` column, the faster of the two
    epochs) against ``benchmarks/hand_vae.py`` (a hand-written loop with nothing of pyrovae's, same
    sizes, the faster of its two epochs), both in torch's default thread settings.
(2) ``peers``: the peers' own commands at their own settings for ``--peer-epochs`` epochs, against
    ``cli.py fit`` at the same settings; wall time of the whole command (start-up, data loading,
    per-epoch evaluation and pictures included):

    - Pyro's ``examples/vae/vae.py`` (MNIST, z 50, batch 256): ``python -O vae.py -n E`` against
      ``cli.py fit --dataset mnist --epochs E --z-dim 50 --batch-size 256``;
    - pytorch/examples' ``vae/main.py`` (MNIST, z 20, batch 128): ``python main.py --epochs E`` against
      ``cli.py fit --dataset mnist --epochs E``.

    Give each peer's folder from a checkout (``--pyro-vae pyro/examples/vae``, ``--pytorch-vae
    examples/vae``); each is copied to a temporary folder with the data linked where it looks for it.
    Pyro's script imports visdom (a stand-in module is supplied if none is installed; it is used only
    with ``-visdom``), plots with pandas and seaborn (``--peer-path`` adds a folder that holds them to
    its ``PYTHONPATH``), and asserts Pyro 1.9.1, which ``-O`` skips.

(3) ``startup``: what a command pays before its first step and after its last, each in a fresh
    process: importing torch; importing pyrovae's CLI (torch, Pyro, click; matplotlib only for a
    latent scatter); building Adam and taking one step, ``torch.optim.Adam(fused=True)`` (which imports
    ``torch._dynamo``) against ``pyrovae.optim.Adam``; the first call of ``torch.broadcast_shapes``
    (which imports sympy, and which pyrovae's step no longer makes) and the default model's first
    training step, validated as ``fit``'s is; and the exit (from the last statement to the process's
    end, timed by the parent) after importing the CLI, with and without ``gc.freeze()`` (which
    ``cli.py`` calls): the difference is the interpreter's last collection over what the imports made.

    python benchmarks/commands.py --data-dir ../shared/data --repeats 2
    python benchmarks/commands.py --data-dir ../shared/data --repeats 2 --only peers \\
        --pyro-vae ~/src/pyro/examples/vae --pytorch-vae ~/src/examples/vae --peer-path ~/peer-libs
"""

from __future__ import annotations

import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent


def run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """``(wall seconds, stdout)`` of ``command``; exits with its output should it fail."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = done.stdout[-2000:] + done.stderr[-2000:]
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{tail}")
    return seconds, done.stdout


def environment(**changes: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def fit(data_dir: str, out: Path, options: list[str]) -> tuple[float, list[float]]:
    """``cli.py fit`` as a user runs it: (wall seconds, the ``seconds`` column)."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "cli.py", "fit", "--data-dir", data_dir, "--out", str(out), *options]
    wall, _ = run(command, ROOT, environment())
    with open(out / "metrics.csv") as f:
        return wall, [float(row["seconds"]) for row in csv.DictReader(f)]


def hand(data_dir: str, dataset: str, epochs: int) -> list[float]:
    command = [sys.executable, "benchmarks/hand_vae.py", "--data-dir", data_dir, "--dataset", dataset,
               "--epochs", str(epochs)]  # fmt: skip
    _, out = run(command, ROOT, environment())
    return [float(line.split()[2]) for line in out.splitlines() if line.startswith("epoch ")]


def span(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def epoch_benchmark(data_dir: str, dataset: str, repeats: int, work: Path) -> None:
    times: dict[str, list[float]] = {"fit": [], "hand": []}
    for _ in range(repeats):
        times["fit"].append(min(fit(data_dir, work / "fit", ["--dataset", dataset, "--epochs", "2"])[1]))
        times["hand"].append(min(hand(data_dir, dataset, 2)))
    print(f"(1) {dataset}, seconds per epoch (the faster of two epochs), {repeats} alternated rounds:")
    print("| command | seconds | ratio to fit, each round |")
    print("| --- | --- | --- |")
    for name, label in (
        ("fit", f"`cli.py fit --dataset {dataset} --epochs 2` (`seconds`)"),
        ("hand", "`benchmarks/hand_vae.py`"),
    ):
        ratios = [round(a / b, 3) for a, b in zip(times["fit"], times[name], strict=True)]
        print(f"| {label} | {span(times[name])} | {', '.join(map(str, ratios))} |", flush=True)


def pyro_peer(folder: Path, data_dir: str, work: Path, epochs: int, peer_path: str | None):
    copy = work / "pyro-vae"
    shutil.copytree(folder, copy, dirs_exist_ok=True)
    cache = copy / "utils" / ".data"  # pyro.contrib.examples.util.get_data_directory(utils/mnist_cached.py)
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "MNISTCached").exists():
        (cache / "MNISTCached").symlink_to(Path(data_dir).resolve() / "MNIST")
    stand_in = work / "stand-in"
    stand_in.mkdir(exist_ok=True)
    (stand_in / "visdom.py").write_text('"""Imported by vae.py, used only with -visdom."""\n')
    path = os.pathsep.join(p for p in (peer_path, os.environ.get("PYTHONPATH"), str(stand_in)) if p)
    env = environment(PYTHONPATH=path, CI=None)  # with CI set, it looks for its data in ~/.data
    return [sys.executable, "-O", "vae.py", "-n", str(epochs)], copy, env


def pytorch_peer(folder: Path, data_dir: str, work: Path, epochs: int, peer_path: str | None):
    copy = work / "pytorch" / "vae"
    shutil.copytree(folder, copy, dirs_exist_ok=True)
    (copy / "results").mkdir(exist_ok=True)
    if not (work / "pytorch" / "data").exists():
        (work / "pytorch" / "data").symlink_to(Path(data_dir).resolve())  # main.py reads ../data
    return [sys.executable, "main.py", "--epochs", str(epochs)], copy, environment()


PEERS = {
    "pyro": (pyro_peer, ["--z-dim", "50", "--batch-size", "256"], "Pyro `examples/vae/vae.py -n {e}`"),
    "pytorch": (pytorch_peer, [], "pytorch/examples `vae/main.py --epochs {e}`"),
}


def peers_benchmark(folders: dict[str, Path], data_dir: str, repeats: int, epochs: int, peer_path, work):
    print(f"(2) whole commands, {epochs} MNIST epochs at the peer's settings, {repeats} alternated rounds:")
    print("| peer's command | seconds | pyrovae at its settings | seconds | ratio, each round |")
    print("| --- | --- | --- | --- | --- |")
    for name, folder in folders.items():
        make, options, label = PEERS[name]
        command, cwd, env = make(folder, data_dir, work, epochs, peer_path)
        options = ["--dataset", "mnist", "--epochs", str(epochs), *options]
        theirs, ours = [], []
        for _ in range(repeats):
            theirs.append(run(command, cwd, env)[0])
            ours.append(fit(data_dir, work / "fit", options)[0])
        ratios = ", ".join(f"{a / b:.2f}" for a, b in zip(ours, theirs, strict=True))
        ours_label = f"`cli.py fit {' '.join(options)}`"
        row = f"| {label.format(e=epochs)} | {span(theirs)} | {ours_label} | {span(ours)} | {ratios} |"
        print(row, flush=True)


_ADAM = "import torch, pyrovae.optim; p = [torch.nn.Parameter(torch.ones(8))]"
_STEP = (
    "import torch, pyro; from pyrovae.config import ModelConfig; from pyrovae.model import VAE; "
    "from pyrovae.train import adam, elbo_loss; loss_fn = elbo_loss(VAE(ModelConfig())); "
    "o = adam(loss_fn.parameters(), 1e-3); x = (torch.rand(128, 784) < 0.3).float()"
)
# name: (set-up, the timed statements), each in a fresh process
STARTUP = {
    "import torch": ("", "import torch"),
    "import cli (torch, Pyro, click)": ("", "import cli"),
    "torch.optim.Adam(fused=True), one step": (
        _ADAM,
        "o = torch.optim.Adam(p, lr=1e-3, fused=True); p[0].grad = torch.ones(8); o.step()",
    ),
    "pyrovae.optim.Adam, one step": (
        _ADAM,
        "o = pyrovae.optim.Adam(p, lr=1e-3); p[0].grad = torch.ones(8); o.step()",
    ),
    "first call of torch.broadcast_shapes (it imports sympy)": (
        "import torch",
        "torch.broadcast_shapes((2, 1), (3,))",
    ),
    "the default model's first training step, validated, as fit's": (
        _STEP,
        "with pyro.validation_enabled(True): loss_fn(x).backward(); o.step()",
    ),
}
# The exit (from the last statement to the process's end, timed by the parent): the interpreter's last
# collection over what the imports made, and cli.py's way out of it.
EXITS = {
    "exit after `import cli`": "import cli",
    "exit after `import cli; gc.freeze()` (as cli.py runs)": "import gc, cli; gc.freeze()",
}


def startup_benchmark(repeats: int) -> None:
    """Seconds of each part of STARTUP and EXITS, in fresh processes, the parts alternated in each round."""
    times: dict[str, list[float]] = {name: [] for name in [*STARTUP, *EXITS]}
    for _ in range(repeats):
        for name, (setup, statement) in STARTUP.items():
            code = (
                f"import time\n{setup}\nt = time.perf_counter()\n{statement}\nprint(time.perf_counter() - t)"
            )
            times[name].append(float(run([sys.executable, "-c", code], ROOT, environment())[1]))
        for name, statement in EXITS.items():
            code = f"{statement}; import time; print(time.time())"
            _, stdout = run([sys.executable, "-c", code], ROOT, environment())
            times[name].append(time.time() - float(stdout))
    print(f"(3) start-up, seconds in fresh processes, {repeats} alternated rounds:")
    print("| part | seconds |")
    print("| --- | --- |")
    for name, t in times.items():
        print(f"| {name} | {span(t)} |", flush=True)


@click.command()
@click.option("--data-dir", required=True, help="Holds MNIST/raw and FashionMNIST/raw.")
@click.option("--dataset", type=click.Choice(["mnist", "fashionmnist"]), default="fashionmnist")
@click.option("--repeats", type=click.IntRange(min=1), default=2)
@click.option("--only", type=click.Choice(["epoch", "peers", "startup"]), default=None)
@click.option("--pyro-vae", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--pytorch-vae", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--peer-path", default=None, help="Added to the peers' PYTHONPATH (pandas, seaborn).")
@click.option("--peer-epochs", type=click.IntRange(min=1), default=3)
def main(data_dir, dataset, repeats, only, pyro_vae, pytorch_vae, peer_path, peer_epochs):
    import torch  # for the header only: every timed command is a process of its own

    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if only in (None, "epoch"):
            epoch_benchmark(data_dir, dataset, repeats, work)
        folders = {k: v for k, v in (("pyro", pyro_vae), ("pytorch", pytorch_vae)) if v is not None}
        if only in (None, "peers") and folders:
            peers_benchmark(folders, data_dir, repeats, peer_epochs, peer_path, work)
        if only in (None, "startup"):
            startup_benchmark(repeats)


if __name__ == "__main__":
    main()
