#!/usr/bin/env bash
# Fits every row of examples/README.md's table on Fashion-MNIST and prints it: each row is one
# `cli.py fit` and one `cli.py evaluate` (K = 1000 importance samples on the first 1000 test images).
#   bash examples/measure_swaps.sh ../shared/data runs/swaps 10
set -euo pipefail
data_dir=${1:?data folder}; out=${2:?output folder}; epochs=${3:-10}
python=${PYTHON:-python}
rows=(
    "bernoulli normal" "bernoulli mog" "bernoulli vamp" "bernoulli studentt"
    "continuous-bernoulli normal" "gaussian normal" "discretized-logistic normal"
)
echo "| dataset | likelihood | prior | epochs | test ELBO | IS log p(x) | bits/dim |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for row in "${rows[@]}"; do
    read -r likelihood prior <<< "$row"
    run="$out/$likelihood-$prior"
    "$python" cli.py fit --dataset fashionmnist --data-dir "$data_dir" --epochs "$epochs" \
        --likelihood "$likelihood" --prior "$prior" --out "$run" > "$run.log" 2>&1
    "$python" cli.py evaluate "$run" --num-samples 1000 --num-points 1000 --json 2> /dev/null > "$run.json"
    "$python" - "$run.json" "$likelihood" "$prior" "$epochs" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"| fashionmnist | {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {r['elbo']:.2f} | "
      f"{r['log_px']:.2f} ± {r['log_px_stderr']:.2f} | {r['bits_per_dim']:.4f} |")
PY
done
