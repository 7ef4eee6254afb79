"""Tests of d2im_tf.training.memory: the estimate from the config is a lower bound of the real network,
and absurd sizes are refused with it."""

import pytest

from d2im_tf.config import load_config
from d2im_tf.errors import UserError
from d2im_tf.training.memory import check_run_memory, network_sizes, run_memory_bytes

TINY = "configs/tiny.yaml"


@pytest.mark.parametrize(
    "network, overrides",
    [("sdf", []), ("sdf", ["model.encoder_width=16"]), ("camera", []), ("camera", ["camera.backbone=resnet18"])],
)
def test_weight_count_is_a_close_lower_bound_of_the_built_network(network, overrides):
    from d2im_tf.training.run import build_model

    config = load_config(TINY, overrides)
    weights, _ = network_sizes(config, network)
    built = sum(int(w.shape.num_elements()) for w in build_model(config, network).trainable_weights)
    assert 0.75 * built <= weights <= built  # biases, batch norms and shortcuts are left out


@pytest.mark.parametrize(
    "override, phrase",
    [
        ("train.batch_size=1000000000", "70.7 PB"),
        ("model.image_size=100000", "199.7 TB"),
        ("model.encoder_width=1000000", "42.9 PB"),
    ],
)
def test_absurd_sizes_are_refused_with_the_estimate(override, phrase):
    config = load_config(None, [override])
    with pytest.raises(
        UserError,
        match=f"the sdf network's training needs at least {phrase} of memory .an estimate "
        "from the config., more than the 16.0 GB this machine has; lower "
        "train.batch_size",
    ):
        check_run_memory(config, "sdf", available=16 * 10**9)
    paper = load_config(None)
    assert check_run_memory(paper, "sdf", available=16 * 10**9) == run_memory_bytes(paper, "sdf")


def test_the_papers_runs_fit_a_16_gb_machine():
    config = load_config(None)
    assert run_memory_bytes(config, "sdf") < 2 * 10**9 and run_memory_bytes(config, "camera") < 4 * 10**9
