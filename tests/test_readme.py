"""The README's "Reproducing the literature" figures are the carried runs' own: each row's log p(x), its
standard errors, ELBO, active units, epochs and best epoch are read back from ``recipes/carried/NAME``
(``evaluation.json``, ``metrics.csv``), the short table before it holds the same figures, and its paired
comparison table is what ``compare`` prints for them today; a row in progress gives its parked run's
epochs, and docs/reproducing.md quotes what ``reproduce.py --status`` says of it. A figure typed by hand,
or left behind when a run is carried on, fails here."""

import json
import re
import statistics
from pathlib import Path

import pytest

from pyrovae import io
from tests.conftest import invoke
from tests.test_compare import _reproduce_module

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
TABLE_HEAD = "| row | data | paper | pyrovae: log p(x), nats |"


def _rows(head: str = TABLE_HEAD) -> list[list[str]]:
    lines = README[README.index(head) :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        # split at each "|" but an escaped one, which a cell may hold
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])])
    return rows


ROWS = _rows()


def _run_name(row: list[str]) -> str:
    return re.search(r"--out ~/pyrovae-runs/([\w-]+)`", row[-1]).group(1)


SCORED = [row for row in ROWS if row[3].startswith("**")]
UNSCORED = ("in progress", "not started", "not run")  # how a row not scored begins
IN_PROGRESS = [row for row in ROWS if row[3].startswith("in progress")]


def _evaluation(row: list[str]) -> dict:
    return json.loads((ROOT / "recipes" / "carried" / _run_name(row) / "evaluation.json").read_text())


def test_the_table_has_its_rows_and_columns():
    assert len(SCORED) >= 5
    assert all(len(row) == 7 for row in ROWS), [len(row) for row in ROWS]


def test_every_published_row_is_in_the_table():
    rows = {(row[0].split(" (")[0], row[1]) for row in ROWS}
    for model in ("VAE, N(0, I) prior", "VampPrior", "HVAE, N(0, I) prior", "ConvHVAE, N(0, I) prior"):
        assert {(model, "MNIST"), (model, "Fashion-MNIST")} <= rows
    assert ("one-layer IWAE, k = 50", "MNIST") in rows


@pytest.mark.parametrize("row", [row for row in ROWS if row not in SCORED], ids=lambda row: _run_name(row))
def test_a_row_not_scored_has_no_scored_run(row):
    """A run that was scored (and carried) gets its figures in the table: none is left behind."""
    assert row[3].startswith(UNSCORED), row[3]
    assert not (ROOT / "recipes" / "carried" / _run_name(row) / "evaluation.json").exists()


@pytest.mark.parametrize("row", IN_PROGRESS, ids=lambda row: _run_name(row))
def test_a_row_in_progress_says_how_far_its_carried_run_got(row):
    """The cell "N of M when parked": the parked run's epochs and its planned ones, so that a park without
    its README edit fails here."""
    run = ROOT / "recipes" / "carried" / _run_name(row)
    trained, planned = re.match(r"([\d,]+) of ([\d,]+) when parked", row[4]).groups()
    metrics = io.read_metrics(run)
    assert int(trained.replace(",", "")) == len(metrics) == int(metrics[-1]["epoch"])
    assert int(planned.replace(",", "")) == json.loads((run / "config.json").read_text())["epochs"]


@pytest.mark.parametrize("row", SCORED, ids=lambda row: _run_name(row))
def test_a_rows_figures_are_its_carried_runs(row):
    name, (_, data, _, score, epochs, hours, _) = _run_name(row), row
    run = ROOT / "recipes" / "carried" / name
    summary = _evaluation(row)
    metrics = io.read_metrics(run)
    assert summary["num_samples"] == 5000 and summary["num_points"] == 10000 and summary["split"] == "test"
    assert summary["dataset"] == {"MNIST": "mnist", "Fashion-MNIST": "fashionmnist"}[data]
    figures = re.match(
        r"\*\*(-?[\d.]+) ± ([\d.]+)\*\* \(s\.e\. over images; Monte Carlo s\.e\. ([\d.]+)\); "
        r"ELBO (-?[\d.]+); (\d+) of (\d+) latent units active",
        score,
    )
    assert figures, score
    log_px, se_images, se_mc, elbo, active, z_dim = figures.groups()
    assert log_px == f"{summary['log_px']:.2f}"
    assert se_images == f"{summary['log_px_stderr_images']:.2f}"
    assert se_mc == f"{summary['log_px_stderr']:.3f}"
    assert elbo == f"{summary['elbo']:.2f}"
    assert (int(active), int(z_dim)) == (summary["active_units"], summary["z_dim"])  # the HVAE's: z2's
    for layer, count in list(summary.get("active_units_by_layer", {}).items())[1:]:
        assert f"{count} of {summary['z_dim']} in {layer}" in score
    stopped = re.match(
        r"(\d+): stopped early, no better validation ELBO in the 50 epochs after epoch (\d+) "
        r"\(validation ELBO (-?[\d.]+)\)",
        epochs,
    )  # fmt: skip
    if stopped:
        trained, best, valid = stopped.groups()
        best_row = max(metrics, key=lambda r: r["valid_elbo"])
        assert int(best) == int(best_row["epoch"]) == summary["epoch"]
        assert valid == f"{best_row['valid_elbo']:.2f}"
    else:  # a run without a validation split (the IWAE paper's) trains every epoch; its last is scored
        finished = re.match(r"([\d,]+): all of them \(no validation split\), the last scored", epochs)
        trained = finished.group(1).replace(",", "")
        config = json.loads((run / "config.json").read_text())
        assert config["validation"] == 0 and int(trained) == config["epochs"] == summary["epoch"]
    assert int(trained) == len(metrics) == int(metrics[-1]["epoch"])
    seconds = [r["seconds"] for r in metrics]
    assert hours.startswith(f"{sum(seconds) / 3600:.2f} by the `seconds` column")
    assert f"(its median was {statistics.median(seconds):.2f} s)" in hours


SUMMARY_HEAD = "| row | MNIST: paper | MNIST: pyrovae | Fashion-MNIST: paper | Fashion-MNIST: pyrovae |"


def test_the_summary_table_is_the_full_tables_figures_and_the_carried_runs():
    """The short table before the full one: each paper's figure is the full table's, each of pyrovae's
    the carried run's ``evaluation.json`` (log p(x) and its s.e. over images), each row not scored says so
    as the full table does, and the two tables hold the same rows."""
    full = {(row[0], row[1]): row for row in ROWS}
    cells = set()
    for name, *columns in _rows(SUMMARY_HEAD):
        for data, (paper, ours) in zip(("MNIST", "Fashion-MNIST"), (columns[:2], columns[2:]), strict=True):
            if (name, data) not in full:
                assert paper == ours == "", (name, data)
                continue
            cells.add((name, data))
            row = full[(name, data)]
            assert paper == row[2]
            if row in SCORED:
                summary = _evaluation(row)
                assert ours == f"{summary['log_px']:.2f} ± {summary['log_px_stderr_images']:.2f}"
                assert row[3].startswith(f"**{ours}**")
            else:
                states = [[s for s in UNSCORED if cell.startswith(s)] for cell in (ours, row[3])]
                assert states[0] == states[1] and len(states[0]) == 1, (ours, row[3])
    assert cells == set(full)


# each "`python cli.py compare RUN ... --markdown` prints" in the section, and the table after it
COMPARISONS = list(
    re.finditer(r"`python cli\.py compare ([^`]+) --markdown` prints", README.replace("\n", " "))
)


def test_the_section_shows_both_columns_paired_comparisons():
    assert len(COMPARISONS) >= 2


@pytest.mark.parametrize("command", COMPARISONS, ids=lambda m: m.group(1).split()[0].split("/")[-1])
def test_a_paired_comparison_table_is_what_compare_prints(command):
    runs = command.group(1).split()
    start = README.index("| run | log p(x) | MC s.e.", command.end())
    table = README[start : README.index("\n\n", start)]
    assert all(run in table for run in runs)  # the table after the command is its own
    result = invoke("compare", *[str(ROOT / run) for run in runs], "--markdown")
    assert result.exit_code == 0, result.output
    printed = result.output.replace(str(ROOT) + "/", "").strip()
    assert table.strip() == printed


HISTORY = (ROOT / "docs" / "reproducing.md").read_text()


@pytest.mark.parametrize("row", IN_PROGRESS, ids=lambda row: _run_name(row))
def test_the_history_quotes_what_status_says_of_a_parked_run(row):
    """docs/reproducing.md quotes ``reproduce.py --status`` on the carried run: the quote is today's."""
    name = _run_name(row)
    said = _reproduce_module().status(ROOT / "recipes" / "carried" / name, 5000)[2]
    history = " ".join(HISTORY.split())  # its lines joined
    command = f"--status recipes/{name}.toml --runs recipes/carried` says where it is, "
    quote = re.search(re.escape(command) + r'"([^"]+)"', history)
    assert quote.group(1) == said
