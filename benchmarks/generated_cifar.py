"""Write generated colour images (32 x 32 RGB blobs, ten classes) as a ``cifar-10-batches-py`` folder in
CIFAR-10's published layout, so that the whole colour pipeline (``--dataset cifar10``: loading, the conv
networks, the discretized logistic, evaluation, RGB pictures) runs where the real CIFAR-10 cannot be
downloaded. Figures measured on these images say nothing of CIFAR-10 itself.

    python benchmarks/generated_cifar.py ~/pyrovae-runs/generated-cifar --per-batch 2000
    python cli.py fit --dataset cifar10 --data-dir ~/pyrovae-runs/generated-cifar --arch conv --epochs 5
"""

from __future__ import annotations

import pickle
from pathlib import Path

import click

from pyrovae.data import CIFAR10_CLASSES, synthetic_dataset


@click.command()
@click.argument("root", type=click.Path(file_okay=False))
@click.option(
    "--per-batch", type=click.IntRange(min=1), default=2000, help="Images in each of the six batches."
)
@click.option("--seed", type=int, default=0)
def main(root: str, per_batch: int, seed: int) -> None:
    data = synthetic_dataset(
        num_train=5 * per_batch, num_test=per_batch, image_size=32, seed=seed, channels=3
    )
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    batches = [(f"data_batch_{i + 1}", data.x_train[i * per_batch : (i + 1) * per_batch],
                data.y_train[i * per_batch : (i + 1) * per_batch]) for i in range(5)]  # fmt: skip
    for name, x, y in [*batches, ("test_batch", data.x_test, data.y_test)]:
        batch = {"batch_label": name, "data": x.numpy(), "labels": y.tolist(), "filenames": []}
        with open(folder / name, "wb") as f:  # (n, 3072) uint8, the red, green and blue planes in turn
            pickle.dump(batch, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES)}, f, protocol=2)
    print(f"wrote {6 * per_batch} generated colour images to {folder}")


if __name__ == "__main__":
    main()
