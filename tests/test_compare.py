"""Per-image results, paired comparison of runs, posterior usage, and runs made from config files."""

import csv
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyrovae import io
from pyrovae.config import ModelConfig, TrainConfig, read_config_file
from pyrovae.data import load_dataset
from pyrovae.evaluate import evaluation_files
from pyrovae.train import fit
from tests.conftest import invoke
from tests.test_cli import assert_one_line_error
from tests.test_protocol import TINY

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))
REPRODUCE = RECIPES[0].parent / "reproduce.py"


@pytest.fixture(scope="module")
def two_scored_runs(tmp_path_factory):
    runs = []
    for seed in ("0", "1"):
        out = tmp_path_factory.mktemp("runs") / f"seed{seed}"
        assert invoke("fit", *TINY, "--epochs", "2", "--seed", seed, "--out", str(out)).exit_code == 0
        result = invoke("evaluate", str(out), "--num-samples", "20", "--no-compile", "--num-points", "150")
        assert result.exit_code == 0, result.output
        runs.append(out)
    return runs


# What `evaluate --num-points 150` writes: the first 150 test images' scores.
SUMMARY, IMAGES = evaluation_files("test", 150)


def _per_image(run):
    with open(run / IMAGES, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_writes_one_row_per_image_that_averages_to_its_summary(two_scored_runs):
    run = two_scored_runs[0]
    rows, summary = _per_image(run), json.loads((run / SUMMARY).read_text())
    assert [int(r["index"]) for r in rows] == list(range(150))
    assert math.isclose(sum(float(r["log_px"]) for r in rows) / 150, summary["log_px"], rel_tol=1e-12)
    assert math.isclose(sum(float(r["elbo"]) for r in rows) / 150, summary["elbo"], rel_tol=1e-12)
    assert all(float(r["log_px"]) >= float(r["elbo"]) for r in rows)
    assert 0 <= summary["active_units"] <= summary["z_dim"] == 2
    assert len(summary["kl_per_dim"]) == 2 and all(k >= 0 for k in summary["kl_per_dim"])


def test_compare_gives_the_paired_difference_and_its_standard_error(two_scored_runs):
    a, b = two_scored_runs
    result = invoke("compare", str(a), str(b), "--markdown", "--num-points", "150")
    assert result.exit_code == 0, result.output
    d = [float(y["log_px"]) - float(x["log_px"]) for x, y in zip(_per_image(a), _per_image(b), strict=True)]
    mean = sum(d) / len(d)
    se = math.sqrt(sum((v - mean) ** 2 for v in d) / (len(d) - 1) / len(d))
    last = result.output.strip().splitlines()[-1].split("|")
    assert float(last[5]) == pytest.approx(mean, abs=5e-4) and float(last[6]) == pytest.approx(se, abs=5e-4)


def test_compare_refuses_runs_scored_on_other_images(two_scored_runs, tmp_path):
    a, b = two_scored_runs
    other = tmp_path / "other"
    assert invoke("fit", *TINY, "--epochs", "1", "--out", str(other)).exit_code == 0
    assert_one_line_error(invoke("compare", str(a), str(other)), "has no evaluation.json")
    assert_one_line_error(
        invoke("compare", str(a), str(other), "--num-points", "150"),
        "has no evaluation-first150.json",
        "--num-points 150",
    )
    # the same file name, but other images: a summary that says so is refused
    (other / IMAGES).write_text((b / IMAGES).read_text())
    (other / SUMMARY).write_text(json.dumps({**json.loads((b / SUMMARY).read_text()), "num_points": 149}))
    assert_one_line_error(
        invoke("compare", str(a), str(other), "--num-points", "150"), "other images", "num_points"
    )
    assert_one_line_error(invoke("compare", str(a)), "at least two runs")


@pytest.mark.parametrize("score", ["nan", "-inf"])
def test_compare_refuses_a_score_that_is_not_a_number(two_scored_runs, tmp_path, score):
    """A diverged model's evaluation can hold nan or -inf for an image: no mean or paired difference is
    made of it, and the line says which image."""
    a, b = two_scored_runs
    spoiled = Path(shutil.copytree(b, tmp_path / "spoiled"))
    rows = (b / IMAGES).read_text().splitlines()
    index, _, elbo = rows[5].split(",")
    (spoiled / IMAGES).write_text("\n".join([*rows[:5], f"{index},{score},{elbo}", *rows[6:]]) + "\n")
    result = invoke("compare", str(a), str(spoiled), "--num-points", "150")
    assert_one_line_error(result, f"gives image {index} a log p(x) of {score}")


def test_a_look_at_a_few_images_never_replaces_the_whole_test_sets_scores(two_scored_runs, tmp_path):
    run = Path(shutil.copytree(two_scored_runs[0], tmp_path / "run"))
    score = ("evaluate", str(run), "--num-samples", "3", "--no-compile")
    assert invoke(*score).exit_code == 0
    whole = (run / "evaluation.json").read_text(), (run / "evaluation-images.csv").read_text()
    assert invoke(*score, "--num-points", "10").exit_code == 0
    assert ((run / "evaluation.json").read_text(), (run / "evaluation-images.csv").read_text()) == whole
    assert json.loads(whole[0])["num_points"] == 200
    assert json.loads((run / "evaluation-first10.json").read_text())["num_points"] == 10
    assert len((run / "evaluation-first10-images.csv").read_text().splitlines()) == 1 + 10
    # as many as the split holds, or more: the whole split, scored as such (not a file named for 201 images
    # that scores 200)
    (run / "evaluation.json").unlink()
    assert invoke(*score, "--num-points", "201").exit_code == 0
    assert not (run / "evaluation-first201.json").exists()
    assert (run / "evaluation-images.csv").read_text() == whole[1]
    again = json.loads((run / "evaluation.json").read_text())
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in json.loads(whole[0]).items() if k != "seconds"
    }


@pytest.mark.parametrize("split, refused", [("validation", True), ("train", True), ("test", False)])
def test_compare_refuses_validation_or_train_scores_of_runs_that_held_out_other_images(
    two_scored_runs, tmp_path, split, refused
):
    copies = []
    for run, held_out in zip(two_scored_runs, (200, 300), strict=True):
        copy = tmp_path / run.name
        copy.mkdir()
        summary = json.loads((run / SUMMARY).read_text())
        summary_file, images_file = evaluation_files(split, 150)
        (copy / summary_file).write_text(json.dumps({**summary, "split": split, "held_out": held_out}))
        (copy / images_file).write_text((run / IMAGES).read_text())
        copies.append(str(copy))
    result = invoke("compare", *copies, "--split", split, "--num-points", "150")
    if refused:
        assert_one_line_error(result, "other images", "held_out")
    else:
        assert result.exit_code == 0, result.output


def test_options_on_the_command_line_override_the_config_file(tmp_path):
    recipe = tmp_path / "r.toml"
    lines = ['dataset = "synthetic"', "epochs = 3", "lr = 0.002"]
    lines += ["[model]", "z_dim = 3", "hidden_dims = [16]", 'family = "hvae"']
    recipe.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    assert invoke("fit", "--config", str(recipe), "--epochs", "1", "--out", str(out)).exit_code == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["epochs"], config["lr"], config["dataset"]) == (1, 0.002, "synthetic")
    assert (config["model"]["z_dim"], config["model"]["family"], config["model"]["hidden_dims"]) == (
        3,
        "hvae",
        [16],
    )


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("epochz = 3\n", "unknown keys at the top level: epochz"),
        ("[model]\nzdim = 3\n", "unknown keys at the [model]"),
        ("epochs = \n", "not valid TOML"),
        ("epochs = 3 # \udcff\n", "not valid TOML"),  # a byte that is not UTF-8
        ("epochs = 0\n", "epochs must be a positive integer"),
    ],
)
def test_a_bad_config_file_is_a_one_line_error(tmp_path, text, fragment):
    recipe = tmp_path / "r.toml"
    recipe.write_bytes(('dataset = "synthetic"\n' + text).encode(errors="surrogateescape"))
    out = tmp_path / "run"
    assert_one_line_error(invoke("fit", "--config", str(recipe), "--out", str(out)), fragment)
    assert not out.exists()


def test_every_recipe_cites_its_source_and_parses():
    # The Exemplar-VAE table's four rows and pyrovae's IAF row on two data sets, and the IWAE paper's row.
    assert len(RECIPES) == 11
    for recipe in RECIPES:
        text, values = recipe.read_text(), read_config_file(recipe)
        assert text.startswith("# ")
        if recipe.stem == "mnist-iwae":
            assert "Burda" in text and values["lr_schedule"] == "burda" and values["adam_eps"] == 1e-4
            assert values["model"]["arch"] == "tanh" and values["num_particles"] == 50
        else:
            assert "jmtomczak/vae_vampprior" in text and values["validation"] == 10000
            assert values["model"]["arch"] in ("gated", "gated-conv")
    folder = RECIPES[0].parent
    mnist, fashion = (read_config_file(folder / f"{d}-convhvae.toml") for d in ("mnist", "fashionmnist"))
    assert {**mnist, "dataset": "fashionmnist"} == fashion


# The F-MNIST ConvHVAE is the MNIST one on other data (checked above): its epoch, a minute of full-resolution
# convolutions over the validation split on two CPU cores, is left to the MNIST one.
TRAINED_RECIPES = [r for r in RECIPES if r.stem != "fashionmnist-convhvae"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", TRAINED_RECIPES, ids=[r.stem for r in TRAINED_RECIPES])
def test_every_recipe_trains_an_epoch_and_keeps_its_values(data_dir, tmp_path, recipe):
    """Each recipe, as ``fit --config`` reads it, with ``--epochs 1``, on its real data set cut to 1,000
    training images past its validation split (10,000 held out, where the recipe has one) and 500 test
    images, so that all of them take seconds, not the minutes (or, for the ConvHVAE, hours) of full epochs."""
    values = read_config_file(recipe)
    model = ModelConfig(**values.pop("model"))
    config = TrainConfig(**{**values, "epochs": 1, "data_dir": str(data_dir), "out": str(tmp_path / "run")},
                         model=model)  # fmt: skip
    data = load_dataset(config.dataset, data_dir)
    n = config.validation + 1000
    data = dataclasses.replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n],
                               x_test=data.x_test[:500], y_test=data.y_test[:500])  # fmt: skip
    run = fit(config, data=data, log=lambda line: None)
    saved, expected = json.loads((run / "config.json").read_text()), read_config_file(recipe)
    (row,) = io.read_metrics(run)
    assert saved["epochs"] == 1 and row["test_elbo"] < 0
    assert (row["valid_elbo"] < 0) if config.validation else row["valid_elbo"] is None
    for key, value in expected.items():
        if key == "model":
            for k, v in value.items():
                assert saved["model"][k] == v, k
        elif key != "epochs":
            assert saved[key] == value, key


@pytest.mark.slow
def test_a_recipe_runs_from_the_command_line(data_dir, tmp_path):
    out = tmp_path / "run"
    recipe = [r for r in RECIPES if r.stem == "mnist-vae"][0]
    result = invoke(
        "fit", "--config", str(recipe), "--epochs", "1", "--data-dir", str(data_dir), "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["epochs"], config["lr"], config["model"]["arch"]) == (1, 0.0005, "gated")


def test_reproduce_fits_scores_and_on_a_second_call_carries_on_without_scoring_again(tmp_path):
    recipe = tmp_path / "tiny.toml"
    lines = ['dataset = "synthetic"', "epochs = 2", "batch_size = 50", "validation = 100"]
    recipe.write_text("\n".join(lines + ["[model]", "z_dim = 2", "hidden_dims = [16]"]) + "\n")
    script = Path(__file__).resolve().parents[1] / "recipes" / "reproduce.py"
    command = [
        sys.executable,
        str(script),
        str(recipe),
        "--runs",
        str(tmp_path / "runs"),
        "--num-samples",
        "5",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "runs" / "tiny"
    scores = json.loads((run / "evaluation.json").read_text())
    assert (scores["num_samples"], scores["epoch"], scores["split"]) == (5, 2, "test")
    assert "fit --config" in first.stdout and "evaluate" in first.stdout
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "fit --resume" in second.stdout and "scored already" in second.stdout
    assert json.loads((run / "evaluation.json").read_text()) == scores
    log = (tmp_path / "runs" / "tiny.log").read_text()
    assert "fitting synthetic" in log and f"{run} has trained all its 2 epochs" in log
    status = subprocess.run([*command, "--status"], capture_output=True, text=True, timeout=120)
    cells = [c.strip() for c in status.stdout.splitlines()[-1].split("|")[1:-1]]
    assert cells[:4] == ["tiny", "2 of 2", cells[2], "finished"] and cells[2].endswith(
        f"(epoch {int(scores['epoch'])})"
    )
    assert cells[6] == f"{scores['log_px']:.2f} ± {scores['log_px_stderr_images']:.2f}"
    assert json.loads((run / "evaluation.json").read_text()) == scores  # --status ran nothing


def _reproduce_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduce", REPRODUCE)
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    return reproduce


def test_a_parked_run_carries_on_where_it_was_parked_on_a_machine_that_lost_its_runs(tmp_path):
    recipe = tmp_path / "tiny.toml"
    lines = ['dataset = "synthetic"', "epochs = 3", "batch_size = 50", "validation = 100"]
    recipe.write_text("\n".join(lines + ["[model]", "z_dim = 2", "hidden_dims = [16]"]) + "\n")
    runs, carried = tmp_path / "runs", tmp_path / "carried"
    base = [sys.executable, str(REPRODUCE), str(recipe), "--runs", str(runs), "--num-samples", "5"]
    assert invoke("fit", "--config", str(recipe), "--epochs", "2", "--out", str(runs / "tiny")).exit_code == 0
    for name in (io.CHECKPOINT, io.BEST_CHECKPOINT):  # as if stopped after epoch 2 of the recipe's 3
        config, state = io.load_checkpoint(runs / "tiny" / name)
        state = {k: v for k, v in state.items() if k not in ("format", "version", "config")}
        io.save_checkpoint(runs / "tiny" / name, dataclasses.replace(config, epochs=3), state)
    rows = io.read_metrics(runs / "tiny")
    io.write_metrics(runs / "tiny", [*rows, {**rows[-1], "epoch": 3}])  # ahead of the checkpoint
    (runs / "tiny.log").write_text("the log so far\n")
    parked = subprocess.run([*base, "--park", str(carried)], capture_output=True, text=True, timeout=120)
    assert parked.returncode == 0 and "at epoch 2" in parked.stdout, parked.stderr
    assert io.read_metrics(carried / "tiny") == rows  # the checkpoint's own rows
    assert sorted(p.name for p in carried.iterdir()) == ["tiny", "tiny.log"]  # nothing staged is left
    shutil.rmtree(runs)  # the machine is laid anew
    result = subprocess.run([*base, "--carried", str(carried)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "carried on from" in result.stdout and "fit --resume" in result.stdout
    assert [m["epoch"] for m in io.read_metrics(runs / "tiny")] == [1.0, 2.0, 3.0]
    log = (runs / "tiny.log").read_text()
    assert log.startswith("the log so far") and "resuming synthetic" in log and "from epoch 3" in log
    again = subprocess.run([*base, "--carried", str(carried)], capture_output=True, text=True, timeout=300)
    assert "is here: carried on from its own checkpoint" in again.stdout  # never overwritten by the copy


def test_park_refuses_checkpoints_that_never_agree_and_a_folder_it_cannot_write(tmp_path):
    reproduce = _reproduce_module()
    run = tmp_path / "runs" / "tiny"
    assert invoke("fit", *TINY, "--epochs", "2", "--validation", "100", "--out", str(run)).exit_code == 0
    _, state = io.load_checkpoint(run / io.CHECKPOINT)
    config, _ = io.load_checkpoint(run / io.BEST_CHECKPOINT)
    io.save_checkpoint(run / io.BEST_CHECKPOINT, config, {**state, "epoch": 99})  # as if caught mid-epoch
    with pytest.raises(Exception, match="not parked in 2 tries: its checkpoints never agreed"):
        reproduce.park_run(tmp_path / "runs", tmp_path / "carried", "tiny", tries=2)
    assert list((tmp_path / "carried").iterdir()) == []  # nothing half copied is left
    (tmp_path / "file").write_text("")
    (tmp_path / "tiny.toml").write_text('dataset = "synthetic"\n')  # the recipe names the run
    result = subprocess.run(
        [sys.executable, str(REPRODUCE), str(tmp_path / "tiny.toml"), "--runs", str(tmp_path / "runs"),
         "--park", str(tmp_path / "file" / "carried")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: ") and str(tmp_path / "file") in result.stderr


def test_reproduce_knows_a_scored_run_by_its_epochs_not_its_files_times(tmp_path):
    import os

    reproduce = _reproduce_module()
    rows = [{"epoch": e, "train_elbo": -9.0, "valid_elbo": v, "test_elbo": -9.0, "seconds": 1.0}
            for e, v in ((1, -5.0), (2, -3.0), (3, -4.0))]  # fmt: skip
    for name in (io.CHECKPOINT, io.BEST_CHECKPOINT):
        (tmp_path / name).write_bytes(b"")
    scores = {"checkpoint": "best", "epoch": 2, "num_samples": 5000, "log_px": -1.0}
    (tmp_path / "evaluation.json").write_text(json.dumps(scores))
    os.utime(tmp_path / "evaluation.json", (0, 0))  # older than the checkpoints, as a copy may leave it
    assert reproduce.current_scores(tmp_path, rows, 5000) == scores
    assert reproduce.current_scores(tmp_path, rows, 1000) is None  # scored at another K
    later = [*rows, {**rows[0], "epoch": 4, "valid_elbo": -2.0}]  # a better epoch since
    assert reproduce.current_scores(tmp_path, later, 5000) is None
    (tmp_path / io.BEST_CHECKPOINT).unlink()  # no best checkpoint: evaluate scores the last epoch
    (tmp_path / "evaluation.json").write_text(json.dumps({**scores, "epoch": 4}))
    assert reproduce.current_scores(tmp_path, later, 5000) == {**scores, "epoch": 4}


def test_reproduce_status_says_how_near_early_stopping_a_run_in_progress_is(tmp_path):
    reproduce = _reproduce_module()
    config = TrainConfig(epochs=2000, warmup=10, validation=100, early_stopping=50)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    valid = [-100.0 + e if e <= 24 else -80.0 for e in range(1, 31)]  # best at epoch 24 of 30
    rows = [{"epoch": e, "train_elbo": -90.0, "valid_elbo": v, "test_elbo": -91.0, "seconds": 10.0}
            for e, v in enumerate(valid, start=1)]  # fmt: skip
    io.write_metrics(tmp_path, rows[:6])
    assert reproduce.status(tmp_path, 5000)[2] == "in progress: warm-up, epoch 6 of 10"
    io.write_metrics(tmp_path, rows)
    cells = reproduce.status(tmp_path, 5000)
    assert cells[:3] == [
        "30 of 2000",
        "-76.00 (epoch 24)",
        "in progress: 6 of 50 epochs without a better validation ELBO",
    ]
    assert cells[3:5] == [f"{30 * 10 / 3600:.2f}", "10.0 s"]


def test_reproduce_status_says_how_long_a_run_without_early_stopping_has_to_go(tmp_path):
    """The IWAE recipe's kind: a fixed number of epochs, so the rest's hours at the median epoch so far."""
    reproduce = _reproduce_module()
    (tmp_path / "config.json").write_text(json.dumps(TrainConfig(epochs=3280).to_dict()))
    rows = [{"epoch": e, "train_elbo": -90.0, "valid_elbo": None, "test_elbo": -91.0, "seconds": s}
            for e, s in enumerate((40.0, 50.0, 600.0, 45.0), start=1)]  # fmt: skip
    io.write_metrics(tmp_path, rows)
    # 3276 epochs left at the median of 40, 45, 50 and 600 s (47.5 s): 43.2 h
    assert reproduce.status(tmp_path, 5000)[:3] == [
        "4 of 3280",
        "",
        "in progress: 3276 epochs to go, 43.2 h at the median epoch",
    ]


def test_reproduce_status_of_a_run_whose_metrics_file_was_spoiled_is_not_not_started(tmp_path):
    """A checkpoint means the run started: a metrics.csv without rows says so, not "not started"."""
    reproduce = _reproduce_module()
    (tmp_path / "config.json").write_text(json.dumps(TrainConfig(epochs=10).to_dict()))
    (tmp_path / io.METRICS).write_text("garbage\n")
    assert reproduce.status(tmp_path, 5000)[:3] == ["0 of 10", "", "not started"]
    (tmp_path / io.CHECKPOINT).write_bytes(b"")
    assert reproduce.status(tmp_path, 5000)[2].startswith("metrics.csv holds no epoch, but a checkpoint")


def test_reproduce_stops_at_the_first_command_that_fails(tmp_path):
    recipe, after = tmp_path / "bad.toml", tmp_path / "after.toml"  # a recipe that reads, and fails in fit
    recipe.write_text('dataset = "synthetic"\nepochs = 0\n')
    after.write_text('dataset = "synthetic"\n')
    result = subprocess.run(
        [sys.executable, str(REPRODUCE), str(recipe), str(after), "--runs", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and result.stdout.count("fit --config") == 1
    assert (
        "error: exit" in result.stderr
        and "epochs must be a positive integer" in (tmp_path / "runs" / "bad.log").read_text()
    )
    assert not (tmp_path / "runs" / "bad").exists() and not (tmp_path / "runs" / "after.log").exists()


def test_evaluate_finds_an_unwritable_result_before_it_scores(two_scored_runs, tmp_path, monkeypatch):
    import pyrovae.evaluate

    run = Path(shutil.copytree(two_scored_runs[0], tmp_path / "run"))
    (run / "evaluation.json").mkdir()  # where the summary would go
    monkeypatch.setattr(pyrovae.evaluate, "importance_estimate", lambda *a, **k: pytest.fail("scored"))
    result = invoke("evaluate", str(run), "--num-samples", "3", "--no-compile")
    assert_one_line_error(result, "cannot write", "evaluation.json", "Is a directory")
    assert not (run / "evaluation-images.csv").exists()
    assert not list(run.glob(".probe*"))


@pytest.mark.parametrize("option", ["--runs", "--carried", "--park"])
def test_reproduce_refuses_a_folder_option_that_names_a_pipe_or_device(tmp_path, option):
    """click refuses a plain file; a pipe or device (--runs /dev/null) passed it, to "File exists"."""
    (tmp_path / "r.toml").write_text('dataset = "synthetic"\n')
    os.mkfifo(tmp_path / "pipe")
    args = [str(tmp_path / "r.toml"), "--runs", str(tmp_path / "runs"), option, str(tmp_path / "pipe")]
    result = CliRunner().invoke(_reproduce_module().main, args)
    assert_one_line_error(result, f"{option} {tmp_path / 'pipe'} is not a folder")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "recipes, fragment",
    [
        ({"a.toml": "epochs = \n"}, "a.toml is not valid TOML"),
        ({"a.toml": 'dataset = "synthetic"\nepochz = 3\n'}, "unknown keys at the top level: epochz"),
        ({"a.toml": 'dataset = "synthetic"\n', "b/a.toml": 'dataset = "synthetic"\n'}, "share the name a"),
    ],
)
@pytest.mark.parametrize("mode", [[], ["--status"], ["--park", "carried"]])
def test_reproduce_reads_every_recipe_before_it_runs_anything(tmp_path, recipes, fragment, mode):
    """A bad recipe, even the last of many, or two that would share a run directory, is one line before
    any row is fitted, reported on or parked; nothing is made."""
    for name, text in recipes.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    args = [*(str(tmp_path / name) for name in recipes), "--runs", str(tmp_path / "runs")]
    args += [str(tmp_path / a) if a == "carried" else a for a in mode]
    result = CliRunner().invoke(_reproduce_module().main, args)
    assert_one_line_error(result, fragment)
    assert result.output.startswith("Error: ")  # nothing ran before it
    assert not (tmp_path / "runs").exists() and not (tmp_path / "carried").exists()


def _within(seconds: float, call):
    """``call()``'s result, failing the test (not hanging it) where ``call`` waits on a pipe."""
    result = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "it waited on a pipe for a writer"
    return result[0]


@pytest.mark.parametrize("name", [SUMMARY, IMAGES, io.METRICS, io.CONFIG])
def test_a_run_file_that_is_a_pipe_is_refused_not_waited_on(two_scored_runs, tmp_path, name):
    """Reading a pipe (or a device) named as a run's file waits for a writer that never comes: compare,
    curves and reproduce --status each read only plain files, and say so in one line."""
    runs = tmp_path / "runs"
    run = Path(shutil.copytree(two_scored_runs[0], runs / "tiny"))
    (run / name).unlink()
    os.mkfifo(run / name)
    if name in (SUMMARY, IMAGES):
        compare = ("compare", str(two_scored_runs[1]), str(run), "--num-points", "150")
        result = _within(30, lambda: invoke(*compare))
        assert_one_line_error(result, f"{run}: its evaluation files cannot be read", "not a regular file")
    if name == io.METRICS:
        result = _within(30, lambda: invoke("curves", str(run), "--out", str(tmp_path / "elbo.png")))
        assert_one_line_error(result, f"cannot read {run / name}", "not a regular file")
    if name in (io.METRICS, io.CONFIG):
        cells = _within(30, lambda: _reproduce_module().status(run, 5000))
        assert cells[2].startswith("unreadable (OSError(22, 'not a regular file'")
