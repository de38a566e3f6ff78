"""The memory estimate (pyrovae/memory.py): its count of a pass's bytes is exact for the sizes it
extrapolates to, the same on the CPU and on ``meta``, sees convolutions' feature maps, and leaves the
global random state and Pyro's param store alone. How the count compares with the memory a pass really
takes is measured by ``benchmarks/memory_estimate.py``."""

from __future__ import annotations

import pyro
import pytest
import torch

from pyrovae import memory
from pyrovae.config import ModelConfig
from pyrovae.importance import _log_weights, plate_dims

MODELS = [
    {"arch": "gated", "prior": "vamp", "num_components": 50},
    {"arch": "gated", "guide": "iaf", "num_flows": 2},
    {"arch": "gated-conv", "family": "hvae", "z_dim": 8},
    {"arch": "conv", "image_shape": (3, 32, 32), "likelihood": "discretized-logistic"},
]


def counted_bytes(config: ModelConfig, images: int, draws: int) -> int:
    """The bytes one pass of ``images`` images and ``draws`` draws makes, counted directly."""
    with torch.no_grad(), pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
        vae = memory._vae(config, "cpu")
        x = torch.zeros(images, config.x_dim)
        dims = plate_dims(vae.model, vae.guide, (x,))
        with memory._BytesMade() as counter:
            _log_weights(vae.model, vae.guide, x, draws, *dims)
    return counter.bytes


@pytest.mark.parametrize("model", MODELS, ids=lambda m: "-".join(str(v) for v in m.values()))
def test_the_count_extrapolates_exactly_to_other_sizes(model):
    config = ModelConfig(**model)
    assert memory.activations(config).bytes(3, 4) == counted_bytes(config, 3, 4)


@pytest.mark.parametrize("model", [MODELS[0], MODELS[2]], ids=["vamp", "gated-conv"])
def test_the_count_on_meta_equals_the_count_on_the_cpu(monkeypatch, model):
    config = ModelConfig(**model)
    on_cpu = memory.activations.__wrapped__(config)
    monkeypatch.setattr(memory, "MAX_REAL_PARAMETERS", 0)  # as for a model too large to build
    assert memory.activations.__wrapped__(config) == on_cpu


def test_a_convolutional_decoder_is_counted_by_its_feature_maps():
    # The ConvHVAE's p(x | z1, z2) runs four gated convolutions of 64 channels at full resolution for
    # each draw: their outputs alone are 4 x 64 x 28 x 28 floats (the first round's estimate, from the
    # layer widths, counted 3,212 floats an image in all).
    count = memory.activations(ModelConfig(arch="gated-conv", family="hvae"))
    assert count.per_draw >= 4 * 64 * 28 * 28 * memory.FLOAT


def test_the_vamppriors_pseudo_inputs_are_counted_once_a_pass():
    small, large = (
        memory.activations(ModelConfig(prior="vamp", num_components=k, arch="gated")) for k in (100, 500)
    )
    assert large.per_image == small.per_image
    # 400 more pseudo-inputs through the encoder: at least their 400 x 784 pixels and two gated 300 layers.
    assert large.fixed - small.fixed >= 400 * (784 + 2 * 300) * memory.FLOAT


def test_counting_leaves_the_random_state_and_the_param_store_alone():
    pyro.clear_param_store()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    memory.activations.__wrapped__(ModelConfig(guide="iaf", num_flows=2))
    memory.parameter_count.__wrapped__(ModelConfig(guide="iaf", num_flows=2, z_dim=7))
    assert torch.equal(torch.rand(3), expected)
    assert len(pyro.get_param_store()) == 0
