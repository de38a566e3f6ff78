import pytest
import torch

from pyrovae.data import binarize, binarize_fixed, load_dataset, synthetic_dataset


def test_synthetic_is_deterministic_uint8_images():
    a, b = synthetic_dataset(), synthetic_dataset()
    assert a.x_train.dtype == torch.uint8 and a.x_train.shape == (1000, 784)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.x_train.max() == 255 and a.x_train.min() == 0


@pytest.mark.parametrize("fixed", [False, True])
def test_binarize_draws_bernoulli_of_the_grey_level(fixed):
    levels = [0, 1, 64, 128, 254, 255]
    x = torch.tensor([levels], dtype=torch.uint8).expand(200000, len(levels))
    torch.manual_seed(0)
    draws = binarize(x, generator=torch.Generator().manual_seed(0) if fixed else None)
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    p = torch.tensor(levels) / 255
    stderr = (p * (1 - p) / len(x)).sqrt()
    assert ((draws.mean(0) - p).abs() <= 4 * stderr).all()  # 0 and 255: exactly 0 and 1


def test_training_binarization_is_fresh_and_test_binarization_fixed():
    x = synthetic_dataset().x_test
    assert not torch.equal(binarize(x), binarize(x))
    assert torch.equal(binarize_fixed(x), binarize_fixed(x))


def test_real_fashion_mnist_matches_its_published_statistics(data_dir):
    data = load_dataset("fashionmnist", data_dir)
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert data.x_train.dtype == torch.uint8 and data.image_shape == (28, 28)
    assert data.y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert abs(data.x_train.float().mean().item() / 255 - 0.2860) < 1e-4
