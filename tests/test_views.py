"""``sample``, ``reconstruct``, ``latent`` and ``interpolate`` on a run made by ``fit``: files and content."""

import json
import math
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import torch

from pyrovae import plots
from pyrovae.data import binarize_fixed, synthetic_dataset
from pyrovae.runs import load_run
from tests.conftest import invoke


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
        (["latent"], ["latent.png", "manifold.png"]),
        (["interpolate", "--pairs", "3", "--steps", "5"], ["interpolations.png"]),
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

    from tests.test_cli import assert_one_line_error

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


def test_the_elbo_picture_draws_both_curves_where_their_values_are(tmp_path):
    from PIL import Image

    metrics = [{"epoch": e, "train_elbo": -300 + 10 * e, "test_elbo": -250.0} for e in range(1, 6)]
    plots.save_elbo_curves(metrics, tmp_path / "elbo.png")
    image = torch.from_numpy(np.array(Image.open(tmp_path / "elbo.png").convert("RGB"))).int()  # (H, W, 3)
    for name, colour in plots.CURVE_COLOURS.items():
        rows, _ = (image == torch.tensor(colour)).all(-1).nonzero(as_tuple=True)
        assert len(rows) > 100, name
    # The flat test curve at -250 is one horizontal band; the rising train curve spans many rows.
    test_rows = (image == torch.tensor(plots.CURVE_COLOURS["test"])).all(-1).nonzero()[:, 0]
    train_rows = (image == torch.tensor(plots.CURVE_COLOURS["train"])).all(-1).nonzero()[:, 0]
    inside = test_rows[test_rows < 420 - 56 - 50]  # leave out the legend, at the bottom right
    assert inside.max() - inside.min() <= 8
    assert train_rows.max() - train_rows.min() > 150


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
