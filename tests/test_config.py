"""Typed config: YAML files, overrides, and errors that name the key."""

from pathlib import Path

import pytest

from d2im_tf.config import Config, ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_default_yaml_holds_the_papers_settings():
    config = load_config(CONFIGS / "default.yaml")
    assert config.model.image_size == 224
    assert config.data.num_points == 2048
    assert config.train.batch_size == 16
    assert config.train.learning_rate == pytest.approx(5e-5)
    assert config.train.beta_1 == pytest.approx(0.9)
    assert config.train.weight_decay == pytest.approx(1e-5)
    assert config.model.encoder_width == 64  # ResNet18
    # The YAML and the dataclass defaults describe the same paper settings.
    assert config.to_dict() == Config().to_dict()


def test_tiny_yaml_loads_and_is_small():
    config = load_config(CONFIGS / "tiny.yaml")
    assert config.model.image_size <= 64 and config.data.num_points <= 512


def test_overrides_parse_yaml_values():
    config = load_config(
        CONFIGS / "tiny.yaml",
        ["model.image_size=64", "train.learning_rate=1e-4", "data.categories=[a, b]", "train.jit_compile=true"],
    )
    assert config.model.image_size == 64
    assert config.train.learning_rate == pytest.approx(1e-4)
    assert config.data.categories == ["a", "b"]
    assert config.train.jit_compile is True


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.image_sise=64", "model.image_sise"),
        ("modle.image_size=64", "modle"),
        ("model.image_size=big", "model.image_size"),
        ("model.image_size=1.5", "model.image_size"),
        ("train.jit_compile=3", "train.jit_compile"),
        ("model.decoder_widths=[1, x]", "model.decoder_widths[1]"),
        ("model.variant=huge", "model.variant"),
        ("model.code_norm=group", "model.code_norm"),
        ("model.point_frequencies=-1", "model.point_frequencies"),
        ("train.lr_schedule=step", "train.lr_schedule"),
        ("train.warmup_steps=-5", "train.warmup_steps"),
        ("data.far_fraction=1.0", "data.far_fraction"),
        ("data.far_inside=1.5", "data.far_inside"),
        ("data.far_inside=-0.1", "data.far_inside"),
        ("train.ema_decay=1.0", "train.ema_decay"),
        ("train.ema_decay=-0.1", "train.ema_decay"),
        ("model.base_target=relief", "model.base_target"),
    ],
)
def test_bad_override_names_the_key(override, key):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert str(error.value).startswith(key)


@pytest.mark.parametrize("written", ["[03001627, 04379243]", "['03001627', \"04379243\"]", "[3001627, 4379243]"])
def test_category_ids_keep_their_leading_zeros_however_written(tmp_path, written):
    """YAML 1.1 reads 03001627 as the octal number 787351; ids are 8-digit texts whatever the quoting."""
    expected = ["03001627", "04379243"]
    assert load_config(None, [f"data.categories={written}"]).data.categories == expected
    path = tmp_path / "c.yaml"
    path.write_text(f"data:\n  categories: {written}\n")
    assert load_config(path).data.categories == expected
    # other numbers: a leading zero is decimal, never octal
    assert load_config(None, ["train.batch_size=010"]).train.batch_size == 10


def test_a_coarse_base_target_needs_a_variant_with_maps():
    for variant in ("baseline", "wsamp"):
        with pytest.raises(ConfigError, match="^model.base_target: 'coarse_sdf' needs displacement maps"):
            load_config(None, [f"model.variant={variant}", "model.base_target=coarse_sdf"])
    assert load_config(None, ["model.base_target=coarse_sdf"]).model.base_target == "coarse_sdf"


def test_set_syntax_errors_are_one_line():
    with pytest.raises(ConfigError) as error:
        load_config(None, ["train.batch_size=[1,"])
    assert (
        str(error.value) == "train.batch_size: the value '[1,' is not valid YAML (expected the node content, "
        "but found '<stream end>')"
    )


def test_bad_yaml_file_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batch_size: sixteen\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: train.batch_size: expected int"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("key", ["data.image_size", "data.shuffle_buffer"])
def test_removed_keys_are_refused_but_an_earlier_run_config_still_loads(tmp_path, key):
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=rf"^{key}: removed"):
        load_config(None, [f"{key}=32"])
    recorded = tmp_path / "config.yaml"  # as `d2im train` recorded it before the key was removed
    recorded.write_text(f"{section}:\n  {name}: 32\n  num_points: 300\n")
    with pytest.raises(ConfigError, match=rf"config.yaml: {key}: removed"):
        load_config(recorded)
    assert load_config(recorded, skip_removed=True).data.num_points == 300


def test_mixed_precision_is_honoured_while_building_and_not_after():
    import keras

    from d2im_tf.training.run import build_model

    config = load_config(CONFIGS / "tiny.yaml", ["train.precision=mixed_float16"])
    for network in ("sdf", "camera"):
        assert build_model(config, network).dtype_policy.name == "mixed_float16"
        assert build_model(config, network, precision="float32").dtype_policy.name == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"


def test_bfloat16_keeps_the_point_path_in_float32():
    """Under mixed_bfloat16 the convolutions compute in bfloat16 but the model's inputs and the point
    decoder stay float32: given the same code, the base field is exactly the float32 model's."""
    import numpy as np
    import tensorflow as tf

    from d2im_tf.geometry import camera
    from d2im_tf.training.run import build_model

    config = load_config(CONFIGS / "tiny.yaml", ["model.variant=full", "model.point_frequencies=4"])
    full = build_model(config, "sdf", precision="float32")
    mixed = build_model(config, "sdf", precision="mixed_bfloat16")
    mixed.set_weights(full.get_weights())
    assert mixed.encoder.stem.layers[0].compute_dtype == "bfloat16"
    assert mixed.base_decoder.hidden[0].compute_dtype == "float32"
    rng = np.random.default_rng(0)
    size = config.model.image_size
    batch = {
        "image": tf.constant(rng.uniform(size=(2, size, size, 3)), tf.float32),
        "points": tf.constant(rng.uniform(-0.6, 0.6, (2, 300, 3)), tf.float32),
        "projection": np.stack([camera.projection_matrix(a, 20.0, 1.4, size) for a in (30.0, 150.0)]).astype(
            np.float32
        ),
        # a fixed front/back split: at test time it follows f_B's sign of change, which rounding can flip
        "gradients": tf.constant(rng.normal(size=(2, 300, 3)), tf.float32),
    }
    code = full.encode(batch["image"], training=False)["global_code"]
    np.testing.assert_array_equal(mixed.base_decoder(code, batch["points"]), full.base_decoder(code, batch["points"]))
    # Whole model: only the image path's rounding separates the two (bfloat16 keeps 8 significant bits).
    expected, got = full(batch, training=False), mixed(batch, training=False)
    assert got["sdf"].dtype == tf.float32
    np.testing.assert_array_equal(got["uv"], expected["uv"])  # projections were not rounded
    scale = float(tf.reduce_max(tf.abs(expected["sdf"])))
    assert float(tf.reduce_max(tf.abs(got["sdf"] - expected["sdf"]))) < 0.05 * scale


def test_slow_precision_names_the_missing_hardware():
    from d2im_tf.training.run import slow_precision

    assert slow_precision("float32", set(), gpu=False) is None
    assert slow_precision("mixed_bfloat16", {"avx2", "amx_bf16"}, gpu=False) is None
    assert slow_precision("mixed_bfloat16", {"avx2", "avx512_bf16"}, gpu=False) is None
    assert "neither AMX nor AVX512-BF16" in slow_precision("mixed_bfloat16", {"avx2", "fma"}, gpu=False)
    assert "float16" in slow_precision("mixed_float16", {"amx_bf16"}, gpu=False)
    assert slow_precision("mixed_float16", set(), gpu=True) is None
