"""The protocol of the literature from the CLI: particles, IWAE, KL warm-up and beta, a validation split,
the best checkpoint and early stopping; and their bad inputs."""

import json

import pytest
import torch

import pyrovae.evaluate
from pyrovae import io, runs
from pyrovae.config import TrainConfig
from pyrovae.data import fixed_representation, hold_out, synthetic_dataset
from pyrovae.runs import load_run
from pyrovae.train import kl_weights
from tests.conftest import invoke
from tests.test_cli import assert_one_line_error

TINY = ["--dataset", "synthetic", "--batch-size", "50", "--z-dim", "2", "--hidden-dims", "32"]


@pytest.fixture(scope="module")
def protocol_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "protocol"
    result = invoke("fit", *TINY, "--epochs", "4", "--num-particles", "3", "--elbo", "iwae", "--warmup", "2",
                    "--validation", "200", "--early-stopping", "3", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_a_run_with_the_whole_protocol_writes_valid_elbo_and_a_best_checkpoint(protocol_run):
    metrics = io.read_metrics(protocol_run)
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    assert all(m["valid_elbo"] is not None and m["valid_elbo"] < 0 for m in metrics)
    best = runs.best_epoch(metrics)
    payload = torch.load(protocol_run / io.BEST_CHECKPOINT, weights_only=True)
    assert payload["epoch"] == best and "optimizer" not in payload  # resume needs the last one's alone
    assert "optimizer" in torch.load(protocol_run / io.CHECKPOINT, weights_only=True)
    config = json.loads((protocol_run / "config.json").read_text())
    expected = {"num_particles": 3, "elbo": "iwae", "warmup": 2, "validation": 200, "early_stopping": 3}
    assert {k: config[k] for k in expected} == expected and config["beta"] == 1.0


def test_evaluate_scores_the_best_checkpoint_unless_told_otherwise(protocol_run):
    best = runs.best_epoch(io.read_metrics(protocol_run))
    result = invoke("evaluate", str(protocol_run), "--num-samples", "20", "--no-compile", "--json")
    assert result.exit_code == 0, result.output
    scored = json.loads(result.output)
    assert scored["epoch"] == best and scored["checkpoint"] == "best"
    assert scored["log_px"] >= scored["elbo"]
    result = invoke("evaluate", str(protocol_run), "--num-samples", "20", "--no-compile", "--json",
                    "--checkpoint", "last")  # fmt: skip
    assert json.loads(result.output)["epoch"] == 4


@pytest.mark.parametrize("split", ["validation", "train"])
def test_evaluate_scores_the_images_the_run_held_out_or_trained_on_beside_the_test_scores(
    protocol_run, monkeypatch, split
):
    seen = []
    real = pyrovae.evaluate.importance_estimate

    def spy(model, guide, x, *args, **kwargs):
        seen.append(x)
        return real(model, guide, x, *args, **kwargs)

    monkeypatch.setattr(pyrovae.evaluate, "importance_estimate", spy)
    result = invoke(
        "evaluate", str(protocol_run), "--split", split, "--num-samples", "2", "--no-compile", "--json"
    )
    assert result.exit_code == 0, result.output
    trained, held_out = hold_out(synthetic_dataset(), 200)
    images = held_out if split == "validation" else trained.x_train
    vae = load_run(protocol_run, torch.device("cpu"))[0]
    assert torch.equal(seen[0], fixed_representation(images, vae.model.p_x.data))
    printed = json.loads(result.output)
    assert printed["num_points"] == len(images) and printed["held_out"] == 200
    # written beside the test set's scores, not over them
    assert json.loads((protocol_run / f"evaluation-{split}.json").read_text()) == printed


def test_the_validation_split_of_a_run_that_held_out_none_is_a_one_line_error(synthetic_run):
    result = invoke("evaluate", str(synthetic_run), "--split", "validation", "--no-compile")
    assert_one_line_error(result, "held out no validation images")


@pytest.mark.parametrize("args", [["--elbo", "iwae-dreg", "--num-particles", "4"], ["--num-particles", "3",
                                  "--beta", "0.5"], ["--elbo", "meanfield", "--warmup", "1"]])  # fmt: skip
def test_each_objective_fits_and_evaluates(tmp_path, args):
    out = tmp_path / "run"
    result = invoke("fit", *TINY, "--epochs", "2", *args, "--out", str(out))
    assert result.exit_code == 0, result.output
    result = invoke("evaluate", str(out), "--num-samples", "20", "--no-compile", "--json")
    scored = json.loads(result.output)
    assert scored["log_px"] >= scored["elbo"]


def test_the_kl_weight_rises_linearly_step_by_step():
    config = TrainConfig(warmup=2, beta=0.5)
    epoch1, epoch2, epoch3 = (kl_weights(config, e, 4) for e in (1, 2, 3))
    assert epoch1 == [0.0, 0.0625, 0.125, 0.1875]
    assert epoch2 == [0.25, 0.3125, 0.375, 0.4375]
    assert epoch3 == [0.5] * 4
    assert kl_weights(TrainConfig(beta=2.0), 1, 3) == [2.0] * 3


def _rows(valid):
    return [{"epoch": i + 1, "valid_elbo": v} for i, v in enumerate(valid)]


def test_early_stopping_counts_epochs_without_improvement_after_the_warmup():
    config = TrainConfig(validation=10, early_stopping=2, warmup=3)
    assert runs.best_epoch(_rows([-9, -8, -8, -10])) == 2  # the first of equals
    assert not runs.stopped_early(config, _rows([-9, -8, -10, -10]))  # epoch 3 is still warm-up
    assert runs.stopped_early(TrainConfig(validation=10, early_stopping=2), _rows([-9, -8, -10, -10]))
    assert runs.stopped_early(config, _rows([-9, -8, -10, -10, -10]))
    assert not runs.stopped_early(config, _rows([-9, -8, -10, -10, -7]))
    assert not runs.stopped_early(TrainConfig(), _rows([-9, -10, -11, -12]))


def test_the_validation_split_is_fixed_and_disjoint_from_training():
    data = synthetic_dataset()
    rest, valid = hold_out(data, 100)
    again, valid_again = hold_out(data, 100)
    assert torch.equal(valid, valid_again) and torch.equal(rest.x_train, again.x_train)
    assert len(rest.x_train) == 900 and len(valid) == 100
    everything = torch.cat([rest.x_train, valid])
    assert torch.equal(everything.sort(0).values, data.x_train.sort(0).values)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--num-particles", "0"], "'--num-particles'"),
        (["--beta", "0"], "'--beta'"),
        (["--beta", "-1"], "'--beta'"),
        (["--beta", "nan"], "'--beta'"),
        (["--warmup", "-1"], "'--warmup'"),
        (["--validation", "-5"], "'--validation'"),
        (["--early-stopping", "0"], "'--early-stopping'"),
        (["--early-stopping", "3"], "needs a validation split"),
        (["--validation", "1000"], "leaves no training images"),
        (["--elbo", "rws"], "'--elbo'"),
    ],
)
def test_bad_protocol_option_is_a_one_line_error(tmp_path, args, fragment):
    out = tmp_path / "run"
    assert_one_line_error(invoke("fit", *TINY, "--out", str(out), *args), fragment)
    assert not out.exists()


def test_resume_refuses_a_changed_protocol(protocol_run):
    before = (protocol_run / io.CHECKPOINT).read_bytes()
    result = invoke("fit", "--resume", str(protocol_run), "--num-particles", "5", "--warmup", "0")
    assert_one_line_error(result, "cannot be resumed", "--num-particles 5", "--warmup 0")
    assert (protocol_run / io.CHECKPOINT).read_bytes() == before
