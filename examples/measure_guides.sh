#!/usr/bin/env bash
# Fits every row of README.md's table of guides and models ("Guides, models and networks") and prints it:
# each row is one `cli.py fit` (10 epochs, every other option at its default) and one `cli.py evaluate`
# (K = 1000 importance samples on the first 2000 test images), on Fashion-MNIST and then MNIST.
#   bash examples/measure_guides.sh ../shared/data runs/guides 10
# (run from the repository's root, on a machine left alone: the seconds per epoch are timings; DATASETS,
# NUM_SAMPLES and NUM_POINTS change the data sets, K and the images scored, as the test does)
set -euo pipefail
data_dir=${1:?data folder}; out=${2:?output folder}; epochs=${3:-10}
python=${PYTHON:-python}; datasets=${DATASETS:-fashionmnist mnist}
num_samples=${NUM_SAMPLES:-1000}; num_points=${NUM_POINTS:-2000}
mkdir -p "$out"
rows=(
    "" "--guide iaf --num-flows 2" "--guide iaf --num-flows 4" "--guide planar --num-flows 4"
    "--guide spline --num-flows 1" "--model hvae"
)
echo "| data set | OPTIONS | ELBO (the same K = $num_samples weights) | IS log p(x) | gap | s.e. over images | seconds per epoch (median) | parameters |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for dataset in $datasets; do
    for options in "${rows[@]}"; do
        run="$out/$dataset$(echo " $options" | tr -d '-' | tr ' ' '-')"
        # shellcheck disable=SC2086  # the options are words
        "$python" cli.py fit --dataset "$dataset" --data-dir "$data_dir" --epochs "$epochs" $options \
            --out "$run" > "$run.log" 2>&1
        "$python" cli.py evaluate "$run" --num-samples "$num_samples" --num-points "$num_points" \
            --data-dir "$data_dir" --json 2> /dev/null > "$run.json"
        "$python" - "$run" "$dataset" "$options" <<'PY'
import csv, json, statistics, sys
from pyrovae.runs import load_run
run, dataset, options = sys.argv[1:]
r = json.load(open(run + ".json"))
seconds = statistics.median(float(row["seconds"]) for row in csv.DictReader(open(run + "/metrics.csv")))
parameters = sum(p.numel() for p in load_run(run)[0].parameters())
name = {"fashionmnist": "F-MNIST", "mnist": "MNIST"}.get(dataset, dataset)
print(f"| {name} | {f'`{options}`' if options else '(defaults)'} | {r['elbo']:.2f} | **{r['log_px']:.2f}** | "
      f"{r['log_px'] - r['elbo']:.2f} | {r['log_px_stderr_images']:.2f} | {seconds:.2f} | {parameters:,} |")
PY
    done
done
