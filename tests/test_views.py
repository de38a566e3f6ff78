"""``sample``, ``reconstruct``, ``latent``, ``interpolate`` and ``curves`` on a run made by ``fit``: files and
content."""

import json
import math
import os
import stat
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import torch

from pyrovae import io, plots
from pyrovae.data import binarize_fixed, synthetic_dataset
from pyrovae.runs import load_run
from tests.conftest import invoke
from tests.test_cli import assert_one_line_error


@pytest.fixture(scope="module")
def trained(synthetic_run):
    vae, _, _ = load_run(synthetic_run)
    data = synthetic_dataset()
    return vae, binarize_fixed(data.x_test), data.y_test


@pytest.mark.parametrize(
    "command, files",
    [
        (["sample", "-n", "16"], ["samples.png"]),
        (["reconstruct"], ["reconstructions.png"]),
        (["latent"], ["latent.png", "latent-manifold.png"]),  # z_dim 2: the manifold too, beside --out
        (["interpolate", "--pairs", "3", "--steps", "5"], ["interpolations.png"]),
        (["curves"], ["elbo.png"]),
    ],
)
def test_command_writes_and_prints_its_pictures(synthetic_run, tmp_path, command, files):
    out = tmp_path / files[0]
    result = invoke(command[0], str(synthetic_run), *command[1:], "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(tmp_path / f) for f in files]
    for f in files:
        image = matplotlib.image.imread(tmp_path / f)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image[..., :3].std() > 0.05  # a picture, not a blank canvas


@pytest.mark.parametrize("command", ["sample", "reconstruct", "latent", "interpolate", "curves"])
@pytest.mark.parametrize("name", ["pic.jpg", "pic.pdf", "pic", "pic.png.txt"])
def test_a_picture_is_a_png_and_a_name_that_says_otherwise_is_refused(synthetic_run, tmp_path, command, name):
    result = invoke(command, str(synthetic_run), "--out", str(tmp_path / name))
    assert_one_line_error(result, f"--out {tmp_path / name}: pictures are written as PNG", "ends in .png")
    assert list(tmp_path.iterdir()) == []
    assert invoke(command, str(synthetic_run), "--out", str(tmp_path / "pic.PNG")).exit_code == 0


def test_a_picture_replaces_a_file_through_its_link_and_never_a_pipe(synthetic_run, tmp_path):
    """The rename that writes a picture whole would replace a link with a file, and a pipe or device
    (``--out /dev/stdout``; as root, ``/dev/null``) with a plain file: the link's target is written, and a
    file that is not a plain one is refused in one line, left as it was."""
    target, link = tmp_path / "target.png", tmp_path / "link.png"
    target.write_bytes(b"old")
    link.symlink_to(target)
    assert invoke("sample", str(synthetic_run), "--out", str(link)).exit_code == 0
    assert link.is_symlink() and target.read_bytes().startswith(b"\x89PNG")
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    for out in (pipe, tmp_path / "to-pipe.png"):
        if out != pipe:
            out.symlink_to(pipe)
        result = invoke("sample", str(synthetic_run), "--out", str(out))
        assert_one_line_error(result, f"cannot write {out}: not a regular file")
        assert stat.S_ISFIFO(pipe.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.png", "pipe.png", "target.png", "to-pipe.png"]


def test_samples_show_the_mean_and_a_binary_draw(trained, tmp_path):
    vae, _, _ = trained
    torch.manual_seed(0)
    z = vae.model.prior().sample((8,))
    likelihood = vae.model.likelihood(z)
    assert set(likelihood.sample().unique().tolist()) <= {0.0, 1.0}
    assert ((likelihood.mean > 0) & (likelihood.mean < 1)).all()


def test_interpolation_ends_at_the_two_reconstructions(trained):
    vae, x, _ = trained
    path = plots.interpolation(vae, x[0], x[1], steps=7)
    assert path.shape == (7, 784)
    torch.testing.assert_close(path[0], vae.reconstruct(x[:1])[0])
    torch.testing.assert_close(path[-1], vae.reconstruct(x[1:2])[0])
    steps = (path[1:] - path[:-1]).abs().sum(1)
    assert (steps < (path[-1] - path[0]).abs().sum()).all()  # each step smaller than the whole way


def test_latent_coordinates_separate_the_classes(trained):
    vae, x, y = trained
    coords, axis = plots.latent_coordinates(vae, x)
    assert axis == "z" and coords.shape == (200, 2)
    torch.testing.assert_close(coords, vae.guide.posterior(x).mean)
    # 1-nearest-neighbour class accuracy, first half against second half: chance is 10%.
    a, b = coords[:100], coords[100:]
    nearest = torch.cdist(b, a).argmin(1)
    assert (y[:100][nearest] == y[100:]).float().mean() > 0.5


def test_latent_projects_a_wide_latent_on_its_principal_components():
    from pyrovae.config import ModelConfig
    from pyrovae.model import VAE

    vae = VAE(ModelConfig(z_dim=6, hidden_dims=(32,)))
    x = binarize_fixed(synthetic_dataset().x_test)
    coords, axis = plots.latent_coordinates(vae, x)
    assert axis == "principal component" and coords.shape == (200, 2)
    assert coords[:, 0].var() >= coords[:, 1].var()
    torch.testing.assert_close(coords.mean(0), torch.zeros(2), atol=1e-5, rtol=0)


def test_manifold_spans_the_prior_quantiles(trained):
    vae, _, _ = trained
    images = plots.manifold(vae, steps=5)
    assert images.shape == (25, 784)
    assert (images[0] - images[-1]).abs().sum() > 1  # opposite corners decode differently


def test_loggers_write_their_logs_inside_the_run_directory_offline(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    pytest.importorskip("swanlab", reason="the swanlab extra is not installed")
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    result = invoke("fit", "--dataset", "synthetic", "--epochs", "2", "--logger", "swanlab", "--logger",
                    "tensorboard", "--logger", "wandb", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["loggers"] == ["swanlab", "tensorboard", "wandb"]
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert {"samples", "reconstructions"} <= set(events.Tags()["images"])
    assert [e.step for e in events.Scalars("seconds_per_epoch")] == [1, 2]
    # SwanLab's and W&B's offline records: the metrics by name, and the two grids as images.
    (swan,) = (out / "swanlog").glob("run-*")
    assert b"train_elbo" in next(swan.glob("run-*.swanlab")).read_bytes()
    assert len(list((swan / "media" / "image").glob("*.png"))) == 2
    (wandb_run,) = (out / "wandb").glob("offline-run-*")
    assert b"test_elbo" in next(wandb_run.glob("run-*.wandb")).read_bytes()
    assert {p.name.split("_")[0] for p in (wandb_run / "files" / "media" / "images").glob("*.png")} == {
        "samples",
        "reconstructions",
    }


@pytest.mark.parametrize("name, module", [("tensorboard", "torch.utils.tensorboard"), ("swanlab", "swanlab"),
                                          ("wandb", "wandb")])  # fmt: skip
def test_a_missing_logger_is_a_one_line_error_before_training(tmp_path, monkeypatch, name, module):
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    result = invoke("fit", "--dataset", "synthetic", "--logger", name, "--out", str(tmp_path / "r"))
    assert_one_line_error(result, f"--logger {name} needs the {name} package", f".[{name}]")
    assert not (tmp_path / "r").exists()


def test_a_run_made_with_the_old_tensorboard_flag_still_loads():
    from pyrovae.config import TrainConfig

    assert TrainConfig.from_dict({"tensorboard": True}).loggers == ("tensorboard",)
    assert TrainConfig.from_dict({"tensorboard": False}).loggers == ()


@pytest.mark.parametrize("low, high", [(-285.6, -238.2), (1, 20), (1, 1), (-0.013, -0.0121), (3, 2000)])
def test_nice_ticks_are_few_round_and_span_the_range(low, high):
    ticks = plots.nice_ticks(low, high)
    assert 2 <= len(ticks) <= 6
    assert ticks[0] <= low and ticks[-1] >= high
    steps = {round(b - a, 12) for a, b in zip(ticks, ticks[1:], strict=False)}
    (step,) = steps  # evenly spaced
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-9


def _pixels_of(path) -> torch.Tensor:
    from PIL import Image

    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).int()  # (H, W, 3)


def _rows_and_columns(image: torch.Tensor, colour: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    return (image == torch.tensor(colour)).all(-1).nonzero(as_tuple=True)


# The plot area of elbo.png: the frame's inside (plots.save_elbo_curves' margins).
LEFT, TOP, PLOT_WIDTH, PLOT_HEIGHT = 78, 36, 640 - 78 - 20, 440 - 36 - 56


def test_the_elbo_picture_draws_each_curve_where_its_values_are(tmp_path):
    metrics = [{"epoch": e, "train_elbo": -300 + 10 * e, "test_elbo": -250.0} for e in range(1, 6)]
    plots.save_elbo_curves(metrics, tmp_path / "elbo.png")
    image = _pixels_of(tmp_path / "elbo.png")
    for name in ("train bound", "test"):
        rows, _ = _rows_and_columns(image, plots.CURVE_COLOURS[name])
        assert len(rows) > 100, name
    assert len(_rows_and_columns(image, plots.CURVE_COLOURS["validation"])[0]) == 0  # no split, no curve
    assert len(_rows_and_columns(image, plots.BEST_COLOUR)[0]) == 0  # nor a best epoch
    # The flat test curve at -250 is one horizontal band; the rising train curve spans many rows.
    test_rows, _ = _rows_and_columns(image, plots.CURVE_COLOURS["test"])
    train_rows, _ = _rows_and_columns(image, plots.CURVE_COLOURS["train bound"])
    inside = test_rows[test_rows < TOP + PLOT_HEIGHT - 50]  # leave out the legend, at the bottom right
    assert inside.max() - inside.min() <= 8
    assert train_rows.max() - train_rows.min() > 150


def test_the_elbo_picture_marks_the_best_validation_epoch(tmp_path):
    valid = [-200, -150, -120, -110, -100, -101, -103, -104, -106, -108]  # best at epoch 5
    metrics = [
        {"epoch": e, "train_elbo": v + 5.0, "valid_elbo": float(v), "test_elbo": v + 1.0}
        for e, v in enumerate(valid, start=1)
    ]
    plots.save_elbo_curves(metrics, tmp_path / "elbo.png")
    image = _pixels_of(tmp_path / "elbo.png")
    assert len(_rows_and_columns(image, plots.CURVE_COLOURS["validation"])[0]) > 100
    rows, columns = _rows_and_columns(image, plots.BEST_COLOUR)
    # Epochs 0..10 on the x ticks: epoch 5 is half way across the plot area, a dashed line down it.
    assert set(columns.tolist()) <= {LEFT + (PLOT_WIDTH - 1) // 2, LEFT + PLOT_WIDTH // 2}
    assert rows.max() - rows.min() > 0.9 * PLOT_HEIGHT


def test_a_long_runs_curves_fill_the_picture_with_its_later_epochs(tmp_path):
    """Epoch 1 at -300 and the other 99 between -120 and -90: the range fits the last 95% of the epochs,
    so they span most of the plot's height (in a range reaching -300 they would span a seventh)."""
    metrics = [{"epoch": 1, "train_elbo": -300.0, "test_elbo": -290.0}] + [
        {"epoch": e, "train_elbo": -90 - 30 * (100 - e) / 98, "test_elbo": -92 - 30 * (100 - e) / 98}
        for e in range(2, 101)
    ]
    skipped, ticks = plots.early_epochs(metrics), plots.elbo_range(metrics)
    assert skipped == 5 and ticks[0] <= -122 + 0.1 and ticks[-1] >= -90 and ticks[0] > -300
    plots.save_elbo_curves(metrics, tmp_path / "elbo.png")
    rows, columns = _rows_and_columns(_pixels_of(tmp_path / "elbo.png"), plots.CURVE_COLOURS["train bound"])
    in_plot = (columns > LEFT) & (columns < LEFT + PLOT_WIDTH - 110)  # left of the legend
    assert rows[in_plot].max() - rows[in_plot].min() > 0.6 * PLOT_HEIGHT
    assert rows.min() >= TOP and rows[in_plot].max() < TOP + PLOT_HEIGHT  # cut at the frame


def test_a_spike_late_in_a_run_neither_flattens_the_curves_nor_goes_unsaid(tmp_path):
    """The Fashion-MNIST HVAE row's run: near -229 from epoch 100 on, but epoch 649's training bound
    fell to -52,794 (one diverging step) and its next epochs recovered. A range that held the spike would
    press the other 299 epochs into one row of pixels; the title names the epochs left outside."""
    metrics = [
        {"epoch": e, "train_elbo": -228 - 30 * 0.97**e, "valid_elbo": -229.5 - 30 * 0.97**e}
        for e in range(1, 301)
    ]
    metrics[199] = {"epoch": 200, "train_elbo": -52_793.6, "valid_elbo": -252.9}  # the spike
    metrics[201] = {"epoch": 202, "train_elbo": -517.2, "valid_elbo": -234.1}
    skipped, ticks = plots.early_epochs(metrics), plots.elbo_range(metrics)
    assert skipped == 15 and -260 <= ticks[0] <= -229.5 - 30 * 0.97**16 and ticks[-1] >= -228
    plots.save_elbo_curves(metrics, tmp_path / "elbo.png")
    rows, columns = _rows_and_columns(_pixels_of(tmp_path / "elbo.png"), plots.CURVE_COLOURS["validation"])
    in_plot = (columns > LEFT) & (columns < LEFT + PLOT_WIDTH - 110)
    assert rows[in_plot].max() - rows[in_plot].min() > 0.6 * PLOT_HEIGHT
    assert plots._spans([1, 2, 3, 15, 200, 202]) == "epochs 1-3, 15, 200 and 1 more"
    assert plots._spans([7]) == "epoch 7"


def test_curves_reads_a_run_still_training_and_refuses_what_fit_does_not_write(synthetic_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    (run / "checkpoint.pt").unlink()  # metrics.csv alone is enough
    (run / "checkpoint-best.pt").unlink(missing_ok=True)
    result = invoke("curves", str(run), "--out", str(tmp_path / "now.png"))
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(tmp_path / "now.png")]
    for content, fragment in [
        (None, "no metrics.csv: no epoch has ended"),
        ("epoch,train_elbo,valid_elbo,test_elbo,seconds\n", "holds no epoch yet"),
        ("epoch,train_elbo,valid_elbo,test_elbo,seconds\n1,-90,,x,1\n", "cannot read"),
        ("epoch,train_elbo,valid_elbo,test_elbo,seconds\n1,-90,,inf,1\n", "a row that fit does not write"),
        ("epoch,train_elbo,valid_elbo,test_elbo,seconds\n1.5,-90,,-91,1\n", "a row that fit does not write"),
        ("epoch,train_elbo\n1,-90,-91\n", "cannot read"),
    ]:
        (run / "metrics.csv").unlink(missing_ok=True)
        if content is not None:
            (run / "metrics.csv").write_text(content)
        assert_one_line_error(invoke("curves", str(run), "--out", str(tmp_path / "x.png")), fragment)
        assert not (tmp_path / "x.png").exists()


def _run_of(folder, valid):
    """A run directory holding ``metrics.csv`` alone, its validation ELBO ``valid`` (None: no split)."""
    folder.mkdir(parents=True)
    rows = []
    for e, v in enumerate(valid, start=1):
        test = v if v is not None else -100.0
        rows.append({"epoch": e, "train_elbo": test - 2, "valid_elbo": v, "test_elbo": test, "seconds": 1})
    io.write_metrics(folder, rows)
    return folder


def test_compared_curves_draw_each_run_in_its_colour_where_its_values_are_its_best_a_dot(tmp_path):
    """Two runs' validation ELBO on one picture (epochs 0 to 20 across it): run a flat at -100 but for
    its best epoch, 5 (-99.5, a dot), run b rising from -110 to -101 over twice a's epochs."""
    a = [-100.0] * 10
    a[4] = -99.5
    b = [-110.0 + i * 9 / 19 for i in range(20)]
    runs = {name: io.read_metrics(_run_of(tmp_path / name, v)) for name, v in (("a", a), ("b", b))}
    plots.save_compared_curves(runs, "valid_elbo", tmp_path / "both.png")
    image = _pixels_of(tmp_path / "both.png")
    (rows_a, cols_a), (rows_b, cols_b) = (_rows_and_columns(image, c) for c in plots.RUN_COLOURS[:2])
    legend = LEFT + PLOT_WIDTH - 110
    rows_a, cols_a = rows_a[cols_a < legend], cols_a[cols_a < legend]

    def column(epoch):
        return LEFT + epoch / 20 * (PLOT_WIDTH - 1)

    assert cols_a.max() <= column(10) + 6  # a's 10 epochs: the left half
    band = rows_a[(cols_a - column(5)).abs() > column(1) - column(0) + 4]  # a's flat epochs
    assert band.max() - band.min() <= 8
    dot = rows_a[(cols_a - column(5)).abs() <= 4]
    assert dot.min() < band.min() - 3  # -99.5 is drawn above the band at -100
    # b spans the width and most of the height, rising to the right
    assert cols_b.max() > column(19) and rows_b.max() - rows_b.min() > 0.6 * PLOT_HEIGHT
    first, last = rows_b[cols_b < column(2)], rows_b[(cols_b > column(14)) & (cols_b < legend)]
    assert first.float().mean() > last.float().mean()  # lower rows are larger: b ends higher


def test_compared_test_curves_mark_the_best_validation_epoch_never_the_best_test_one(tmp_path):
    """The dot is the checkpoint ``evaluate`` scores: validation best at epoch 2, test best at epoch 4."""
    figures = ((1, -101.0, -103.0), (2, -100.0, -102.0), (3, -102.0, -101.5), (4, -103.0, -101.0))
    rows = [dict(epoch=e, train_elbo=-99.0, valid_elbo=v, test_elbo=w, seconds=1.0) for e, v, w in figures]
    runs = {"a": rows, "b": [{**row, "test_elbo": row["test_elbo"] - 1} for row in rows]}
    plots.save_compared_curves(runs, "test_elbo", tmp_path / "test.png")
    image = _pixels_of(tmp_path / "test.png")
    rows_, cols = _rows_and_columns(image, (0, 0, 0))  # black: the dots' outlines (and text, outside)
    inside = (cols > LEFT) & (cols < LEFT + PLOT_WIDTH - 110) & (rows_ > TOP) & (rows_ < TOP + PLOT_HEIGHT)
    epochs = set((1 + (cols[inside] - LEFT) / (PLOT_WIDTH - 1) * 3).round().tolist())  # epochs 1-4 across
    assert epochs == {2.0}


def test_curves_of_several_runs_go_to_one_picture_and_refuse_what_cannot_be_drawn(tmp_path, monkeypatch):
    a, b = _run_of(tmp_path / "a", [-120.0, -110.0, -105.0]), _run_of(tmp_path / "b", [-118.0, -112.0])
    plain = _run_of(tmp_path / "plain", [None, None])  # no validation split
    out = tmp_path / "both.png"
    result = invoke("curves", str(a), str(b), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(out)] and out.exists() and not (a / "elbo.png").exists()
    result = invoke("curves", str(a), str(plain), "--out", str(tmp_path / "test.png"))
    assert result.exit_code == 0, result.output  # a run without a split: the test ELBO is compared
    other = _run_of(tmp_path / "other" / "a", [-119.0, -111.0])  # a's folder name: the legend gives paths
    drawn = []  # the legend's names and the column, of each picture
    monkeypatch.setattr(plots, "save_compared_curves", lambda runs, col, path: drawn.append((*runs, col)))
    assert invoke("curves", str(a), str(other), "--out", str(tmp_path / "paths.png")).exit_code == 0
    assert invoke("curves", str(a), str(plain), "--out", str(tmp_path / "test.png")).exit_code == 0
    assert drawn == [(str(a), str(other), "valid_elbo"), ("a", "plain", "test_elbo")]
    monkeypatch.undo()
    assert_one_line_error(invoke("curves", str(a), str(b)), "give --out FILE")
    for args, fragment in [
        ([str(a), str(plain), "--column", "valid"], "plain held out no validation split"),
        ([str(a), "--column", "test"], "--column compares several runs"),
        ([str(a), str(tmp_path / "a" / ".." / "a")], "a run is given twice"),
    ]:
        assert_one_line_error(invoke("curves", *args, "--out", str(tmp_path / "x.png")), fragment)
        assert not (tmp_path / "x.png").exists()
    many = [str(_run_of(tmp_path / f"r{i}", [-100.0])) for i in range(len(plots.RUN_COLOURS) + 1)]
    assert_one_line_error(invoke("curves", *many, "--out", str(tmp_path / "x.png")), "at most 10 runs")


def test_fits_pictures_need_no_matplotlib(tmp_path):
    # matplotlib's import took 0.4-0.5 s of every fit; the run's three pictures are Pillow's.
    code = (
        "import sys, torch\n"
        "from pathlib import Path\n"
        "from pyrovae import plots\n"
        "from pyrovae.config import ModelConfig\n"
        "from pyrovae.model import VAE\n"
        "vae = VAE(ModelConfig(z_dim=2, hidden_dims=(8,)))\n"
        "metrics = [{'epoch': 1, 'train_elbo': -300.0, 'test_elbo': -290.0}]\n"
        "plots.draw_run(vae, torch.rand(40, 784).round(), metrics, Path(sys.argv[1]))\n"
        "print('matplotlib' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"
    assert {p.name for p in tmp_path.iterdir()} == {"samples.png", "reconstructions.png", "elbo.png"}
