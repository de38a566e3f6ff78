"""Every command under inputs pushed far (Hypothesis, seeded and bounded): it succeeds, or it ends with one
``Error:`` line and a non-zero exit; no traceback, no run directory left by a refused ``fit``, no existing
run directory changed by a refused command. The cases it found are kept below as explicit tests."""

import dataclasses
import hashlib
import itertools
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrovae.config import ModelConfig, TrainConfig
from pyrovae.evaluate import evaluation_files
from tests.conftest import invoke
from tests.test_cli import assert_one_line_error

FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same examples on every run: a seeded suite
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_count = itertools.count()


def _strings(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return strategy.map(str)


NOT_NUMBERS = st.sampled_from(["", "x", "1.5", "1e3", "nan"])
BAD_SIZES = st.one_of(_strings(st.integers(-3, 0)), NOT_NUMBERS)
# Sizes that parse but no machine could hold: the memory estimate, not the kernel, must stop them.
HUGE = st.integers(10**9, 10**15)
SEEDS = (_strings(st.integers(0, 2**32 - 1)), _strings(st.one_of(st.integers(-(2**70), -1),
                                                                 st.integers(2**32, 2**70))))  # fmt: skip
NUMBERS = (
    _strings(st.floats(1e-4, 1e-2)),
    st.one_of(_strings(st.floats(max_value=0)), st.sampled_from(["nan", "inf", "fast", "", "1e400"])),
)


def sizes(valid: st.SearchStrategy, huge: bool = True) -> tuple[st.SearchStrategy, st.SearchStrategy]:
    """(values that parse, sometimes too large to fit; values click refuses)."""
    return _strings(st.one_of(valid, valid, valid, HUGE) if huge else valid), BAD_SIZES


def choice(valid: list[str], bad: list[str]) -> tuple[st.SearchStrategy, st.SearchStrategy]:
    return st.sampled_from(valid), st.sampled_from(bad)


@st.composite
def options(draw, spec: dict[str, tuple[st.SearchStrategy, st.SearchStrategy]]) -> list[str]:
    """Some of the options, all with values that parse, or with one of them broken."""
    names = sorted(draw(st.sets(st.sampled_from(sorted(spec))))) if spec else []
    broken = draw(st.sampled_from([None, *names]))
    args = []
    for name in names:
        good, bad = spec[name]
        args += [name, draw(bad if name == broken else good)]
    return args


FIT_OPTIONS = {
    "--batch-size": sizes(st.integers(16, 256)),
    "--z-dim": sizes(st.integers(1, 6)),
    "--hidden-dims": (
        st.one_of(
            st.lists(st.integers(1, 48), min_size=1, max_size=2).map(lambda s: ",".join(map(str, s))),
            _strings(HUGE),
        ),
        st.sampled_from(["0", "400,-1", "a,b", ",", ""]),
    ),
    "--lr": NUMBERS,
    "--seed": SEEDS,
    "--likelihood": choice(
        ["bernoulli", "gaussian", "discretized-logistic", "continuous-bernoulli"], ["poisson", ""]
    ),  # fmt: skip
    "--prior": choice(["normal", "mog", "vamp", "studentt"], ["flat"]),
    "--num-components": sizes(st.integers(1, 5)),
    "--guide": choice(["gaussian", "iaf", "planar", "spline"], ["flow"]),
    "--num-flows": sizes(st.integers(1, 2)),
    "--model": choice(["vae", "hvae"], ["vq"]),
    "--arch": choice(["mlp", "tanh", "gated"], ["rnn"]),
    "--elbo": choice(["trace", "meanfield", "iwae", "iwae-dreg"], ["rws"]),
    "--scale": choice(["softplus", "bounded"], ["exp"]),
    "--num-particles": sizes(st.integers(1, 3)),
    "--warmup": (_strings(st.integers(0, 2)), st.one_of(_strings(st.integers(-3, -1)), NOT_NUMBERS)),
    "--beta": NUMBERS,
    "--validation": (_strings(st.integers(0, 1200)), _strings(st.integers(-5, -1))),
    "--early-stopping": sizes(st.integers(1, 2), huge=False),
    "--device": choice(["cpu", "auto", "cuda"], ["tpu"]),
}


def _check(result, refused_leaves: Path | None = None) -> None:
    assert "Traceback" not in result.output
    if result.exit_code != 0:
        assert_one_line_error(result)
        if refused_leaves is not None:
            assert not refused_leaves.exists(), result.output


@FUZZ
@given(args=options(FIT_OPTIONS))
def test_fit_under_any_options(tmp_path_factory, args):
    out = tmp_path_factory.getbasetemp() / f"fuzz-fit-{next(_count)}"
    result = invoke("fit", "--dataset", "synthetic", "--epochs", "1", "--out", str(out), *args)
    _check(result, refused_leaves=out)
    if result.exit_code == 0:
        assert (out / "checkpoint.pt").is_file()


# Any TOML value, of any type, for one key of a config file (fit --config): a string where a list of sizes
# belongs, a list where a name belongs, a table where a number belongs.
TOML_VALUES = st.recursive(
    st.one_of(
        st.booleans(),
        st.integers(-3, 64),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        st.sampled_from(["", "x", "300", "normal", "gated", "cpu", "burda", "synthetic"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.just("a"), children, max_size=1)
    ),
    max_leaves=4,
)


def _toml(value) -> str:
    """A TOML value (tomllib reads, nothing in the standard library writes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return json.dumps(value)  # a JSON number or string is a TOML one
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"


@FUZZ
@given(
    field=st.sampled_from([("", f.name) for f in dataclasses.fields(TrainConfig) if f.name != "model"]
                          + [("model", f.name) for f in dataclasses.fields(ModelConfig)]),
    value=TOML_VALUES,
)  # fmt: skip
def test_fit_under_any_config_file(tmp_path_factory, field, value):
    table, key = field
    folder = tmp_path_factory.getbasetemp() / f"fuzz-config-{next(_count)}"
    folder.mkdir()
    line = f"{key} = {_toml(value)}"
    top = [] if key in ("dataset", "epochs") else ['dataset = "synthetic"', "epochs = 1"]
    text = "\n".join(top + ([line] if not table else ["[model]", line])) + "\n"
    (folder / "config.toml").write_text(text)
    out = folder / "run"
    # --out on the command line overrides the file's; the run lands where the check looks
    result = invoke("fit", "--config", str(folder / "config.toml"), "--epochs", "1", "--out", str(out))
    _check(result, refused_leaves=out)


def _snapshot(run: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.iterdir()) if p.is_file()}


COMMON = {"--device": choice(["cpu", "auto", "cuda"], ["tpu"]),
          "--checkpoint": choice(["best", "last"], ["first"])}  # fmt: skip
VIEW_OPTIONS = {
    "sample": {"-n": sizes(st.integers(1, 80)), "--seed": SEEDS},
    "reconstruct": {"-n": sizes(st.integers(1, 250))},
    "latent": {},
    "interpolate": {"--pairs": sizes(st.integers(1, 120)), "--steps": sizes(st.integers(2, 40))},
    "evaluate": {
        # Not HUGE: a valid count of samples or points runs as long as it says, and is not refused.
        "--num-samples": sizes(st.integers(1, 30), huge=False),
        "--num-points": sizes(st.integers(1, 300)),
        "--chunk-size": sizes(st.integers(1, 40)),
        "--batch-size": sizes(st.integers(1, 300)),
        "--split": choice(["test", "validation", "train"], ["valid"]),
        "--seed": SEEDS,
    },
}


@st.composite
def command_args(draw):
    command = draw(st.sampled_from(sorted(VIEW_OPTIONS)))
    args = draw(options({**VIEW_OPTIONS[command], **COMMON}))
    if command == "evaluate":
        args.append("--no-compile")  # compiling takes 20 s once; the fuzz is about the options
    elif draw(st.booleans()):
        names = ["picture.png", "missing/folder/picture.png", "picture.jpg", "pipe.png"]  # pipe.png: a FIFO
        args += ["--out", draw(st.sampled_from(names))]
    return command, args


@FUZZ
@given(case=command_args())
def test_run_commands_under_any_options(synthetic_run, tmp_path_factory, case):
    command, args = case
    here = tmp_path_factory.getbasetemp() / f"fuzz-view-{next(_count)}"
    here.mkdir()
    args = [str(here / a) if a.endswith((".png", ".jpg")) else a for a in args]
    os.mkfifo(here / "pipe.png")
    before = _snapshot(synthetic_run)
    result = invoke(command, str(synthetic_run), *args)
    _check(result)
    assert stat.S_ISFIFO((here / "pipe.png").stat().st_mode)  # never replaced by a picture
    if result.exit_code != 0:
        assert _snapshot(synthetic_run) == before


SUMMARIES = st.one_of(
    st.sampled_from(["{}", "[]", "null", "3", '{"split": 1}', '{"num_points": [1]}', "", "{", "\xff"]),
    st.dictionaries(st.sampled_from(["dataset", "split", "num_points", "data", "held_out", "log_px_stderr"]),
                    st.one_of(st.none(), st.integers(), st.text(max_size=3), st.floats())).map(json.dumps),
)  # fmt: skip
CELLS = st.one_of(_strings(st.integers(-3, 3)), _strings(st.floats()), st.sampled_from(["", "x", "1e999"]))
IMAGES = st.tuples(
    st.sampled_from(["index,log_px,elbo", "index,log_px", "log_px", "", "index,elbo"]),
    st.lists(st.lists(CELLS, min_size=0, max_size=3).map(",".join), max_size=4),
).map(lambda t: "\n".join([t[0], *t[1]]) + "\n")


@FUZZ
@given(files=st.lists(st.tuples(SUMMARIES, IMAGES), min_size=2, max_size=2),
       markdown=st.booleans(), split=st.sampled_from(["test", "validation"]))  # fmt: skip
def test_compare_under_any_evaluation_files(tmp_path_factory, files, markdown, split):
    runs = []
    for summary, images in files:
        run = tmp_path_factory.getbasetemp() / f"fuzz-compare-{next(_count)}"
        run.mkdir()
        summary_file, images_file = evaluation_files(split)
        (run / summary_file).write_bytes(summary.encode("utf-8", "surrogateescape"))
        (run / images_file).write_text(images)
        runs.append(str(run))
    _check(invoke("compare", *runs, "--split", split, *(["--markdown"] if markdown else [])))


# One field of a scored pair spoiled: the pair agrees on everything compare checks, so that, unlike the
# two random files above, the table is made, and any value evaluate never writes reaches it.
PAIR_SUMMARY = {"dataset": "synthetic", "split": "test", "num_points": 3, "data": "binarized",
                "num_samples": 5, "log_px_stderr": 0.05}  # fmt: skip
JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=3), st.just(10**400),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)  # fmt: skip
PAIR_CELLS = st.one_of(CELLS, _strings(st.floats(min_value=1e150)), _strings(st.floats(max_value=-1e150)))


@FUZZ
@given(key=st.sampled_from(sorted(PAIR_SUMMARY)), value=JSON_VALUES, row=st.integers(0, 2),
       column=st.sampled_from(["index", "log_px"]), cell=PAIR_CELLS, markdown=st.booleans())  # fmt: skip
def test_compare_of_a_pair_with_one_field_of_any_value(tmp_path_factory, key, value, row, column, cell,
                                                       markdown):  # fmt: skip
    runs = []
    for spoiled in (False, True):
        run = tmp_path_factory.getbasetemp() / f"fuzz-pair-{next(_count)}"
        run.mkdir()
        rows = [{"index": str(i), "log_px": str(-80.0 - i), "elbo": str(-85.0 - i)} for i in range(3)]
        summary = {**PAIR_SUMMARY, key: value} if spoiled else PAIR_SUMMARY
        if spoiled:
            rows[row][column] = cell
        (run / "evaluation.json").write_text(json.dumps(summary))
        lines = ["index,log_px,elbo", *(",".join(r.values()) for r in rows)]
        (run / "evaluation-images.csv").write_text("\n".join(lines) + "\n")
        runs.append(str(run))
    result = invoke("compare", *runs, *(["--markdown"] if markdown else []))
    _check(result)
    if result.exit_code == 0:  # every figure a number of a dozen characters at most
        for line in result.output.splitlines()[-2:]:
            cells = [c.strip() for c in line.strip("|").split("|" if markdown else "  ") if c.strip()][1:]
            assert all(len(c) <= 12 for c in cells), line


METRIC_CELLS = st.one_of(
    _strings(st.integers(-3, 2000)), _strings(st.floats()), st.sampled_from(["", "x", "1e999", "-1e308"])
)
METRICS_FILES = st.tuples(
    st.sampled_from(["epoch,train_elbo,valid_elbo,test_elbo,seconds", "epoch,train_elbo,test_elbo", "", "x"]),
    st.lists(st.lists(METRIC_CELLS, min_size=0, max_size=6).map(",".join), max_size=5),
).map(lambda t: "\n".join([t[0], *t[1]]) + "\n")


@FUZZ
@given(metrics=METRICS_FILES)
def test_curves_under_any_metrics_file(tmp_path_factory, metrics):
    run = tmp_path_factory.getbasetemp() / f"fuzz-curves-{next(_count)}"
    run.mkdir()
    (run / "metrics.csv").write_text(metrics)
    result = invoke("curves", str(run))
    _check(result)
    assert (run / "elbo.png").exists() == (result.exit_code == 0)


# Files fit could have written: whole epochs from 1, finite bounds anywhere up to 1e14 nats down (spikes,
# flat runs, one epoch), with or without a validation column; now and then one that it could not.
ELBOS = st.floats(-1e14, 0, allow_nan=False) | st.sampled_from([-100.0, -1e14])
FIT_METRICS = st.tuples(st.booleans(), st.lists(st.tuples(ELBOS, ELBOS, ELBOS), min_size=1, max_size=40)).map(
    lambda t: (
        "epoch,train_elbo,valid_elbo,test_elbo,seconds\n"
        + "".join(f"{e},{a},{b if t[0] else ''},{c},1\n" for e, (a, b, c) in enumerate(t[1], start=1))
    )
)
COLUMNS = st.sampled_from([[], ["--column", "test"], ["--column", "train"], ["--column", "valid"]])


@FUZZ
@given(metrics=st.lists(FIT_METRICS, min_size=2, max_size=3), bad=st.none() | METRICS_FILES, column=COLUMNS)
def test_curves_of_several_runs_under_any_metrics_files(tmp_path_factory, metrics, bad, column):
    folder = tmp_path_factory.getbasetemp() / f"fuzz-curves-{next(_count)}"
    metrics = metrics if bad is None else [*metrics[:-1], bad]  # now and then a file fit does not write
    runs = [folder / f"run{i}" for i in range(len(metrics))]
    for run, text in zip(runs, metrics, strict=True):
        run.mkdir(parents=True)
        (run / "metrics.csv").write_text(text)
    result = invoke("curves", *map(str, runs), "--out", str(folder / "all.png"), *column)
    _check(result)
    assert (folder / "all.png").exists() == (result.exit_code == 0)


# What the fuzz (and a new user, before it) found: each was a traceback or a process killed for memory.
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["fit", "--seed", "-5"], "'--seed'"),
        (["fit", "--seed", "99999999999"], "'--seed'"),
        (["fit", "--z-dim", "10000000"], "needs about"),
        (["fit", "--hidden-dims", "99999999"], "needs about"),
        (["fit", "--prior", "mog", "--num-components", "100000000"], "needs about"),
        (["fit", "--prior", "vamp", "--num-components", "100000000"], "needs about"),
        (["fit", "--num-particles", "1000000000"], "needs about"),
        # the estimate once counted layer widths alone: convolutions' feature maps were some 370 times more
        (["fit", "--arch", "gated-conv", "--model", "hvae", "--num-particles", "1000"], "needs about"),
    ],
)
def test_found_fit_inputs_are_one_line_errors_leaving_nothing(tmp_path, args, fragment):
    out = tmp_path / "run"
    assert_one_line_error(invoke(*args, "--dataset", "synthetic", "--out", str(out)), fragment)
    assert not out.exists()


@pytest.mark.parametrize(
    "text, fragment",
    [  # each was a TypeError's traceback
        ("[model]\nhidden_dims = 300", "hidden_dims must be a list of positive integers"),
        ("[model]\narch = []", "architecture must be a string"),
        ("data_dir = 5", "data_dir must be a string"),
        ("lr_schedule = [1]", "lr_schedule must be one of"),
    ],
)
def test_found_config_file_values_are_one_line_errors_leaving_nothing(tmp_path, text, fragment):
    (tmp_path / "config.toml").write_text('dataset = "synthetic"\n' + text + "\n")
    out = tmp_path / "run"
    assert_one_line_error(
        invoke("fit", "--config", str(tmp_path / "config.toml"), "--out", str(out)), fragment
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["sample", "--seed", "-1"], "'--seed'"),
        (["evaluate", "--seed", "99999999999"], "'--seed'"),
        (["interpolate", "--pairs", "100000"], "the most is 4,096"),
        (["interpolate", "--pairs", "150"], "needs 300 test images"),
        (["interpolate", "--steps", "100000"], "the most is 4,096"),
        (["sample", "-n", "10000000"], "the most is 4,096"),
        (["reconstruct", "-n", "300"], "more than the 200 test images"),
        (
            ["evaluate", "--chunk-size", "100000", "--batch-size", "100000", "--num-samples", "100000"],
            "needs about",
        ),  # fmt: skip
        (["sample", "--out", "missing/folder/picture.png"], "cannot write"),
        (["curves", "--out", "missing/folder/picture.png"], "cannot write"),
        (["curves", "--out", "."], "is a directory"),
    ],
)
def test_found_run_command_inputs_are_one_line_errors(synthetic_run, args, fragment):
    before = _snapshot(synthetic_run)
    command, *options = args
    assert_one_line_error(invoke(command, str(synthetic_run), *options), fragment)
    assert _snapshot(synthetic_run) == before


@pytest.mark.parametrize(
    "summary, images, fragment",
    [
        ("[]", "index,log_px,elbo\n0,1,1\n", "holds no summary"),  # was an AttributeError
        ("{}", "index,log_px,elbo\n", "has no rows"),  # was a ZeroDivisionError
    ],
)
def test_found_compare_inputs_are_one_line_errors(tmp_path, summary, images, fragment):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "evaluation.json").write_text(summary)
        (tmp_path / name / "evaluation-images.csv").write_text(images)
    assert_one_line_error(invoke("compare", str(tmp_path / "a"), str(tmp_path / "b")), fragment)
