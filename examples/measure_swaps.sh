#!/usr/bin/env bash
# Fits every row of examples/README.md's table on Fashion-MNIST and prints it: each row is one
# `cli.py fit` and one `cli.py evaluate` (K = 1000 importance samples on the first 1000 test images).
#   bash examples/measure_swaps.sh ../shared/data runs/swaps 10
# (run from the repository's root; DATASET and NUM_SAMPLES change the data set and K, as the test does)
set -euo pipefail
data_dir=${1:?data folder}; out=${2:?output folder}; epochs=${3:-10}
python=${PYTHON:-python}; dataset=${DATASET:-fashionmnist}; num_samples=${NUM_SAMPLES:-1000}
mkdir -p "$out"
rows=(
    "bernoulli normal" "bernoulli mog" "bernoulli vamp" "bernoulli studentt"
    "continuous-bernoulli normal" "gaussian normal" "discretized-logistic normal"
)
echo "| dataset | likelihood | prior | epochs | test ELBO | IS log p(x) | bits/dim |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for row in "${rows[@]}"; do
    read -r likelihood prior <<< "$row"
    run="$out/$likelihood-$prior"
    "$python" cli.py fit --dataset "$dataset" --data-dir "$data_dir" --epochs "$epochs" \
        --likelihood "$likelihood" --prior "$prior" --out "$run" > "$run.log" 2>&1
    "$python" cli.py evaluate "$run" --num-samples "$num_samples" --num-points 1000 --json 2> /dev/null > "$run.json"
    "$python" - "$run.json" "$dataset" "$likelihood" "$prior" "$epochs" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {sys.argv[5]} | {r['elbo']:.2f} | "
      f"{r['log_px']:.2f} ± {r['log_px_stderr']:.2f} | {r['bits_per_dim']:.4f} |")
PY
done
