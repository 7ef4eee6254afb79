"""Typed configuration: dataclasses loaded from YAML with ``section.key=value`` overrides.

``configs/default.yaml`` holds the paper's settings and ``configs/tiny.yaml`` a small one for tests.
Every YAML key and every override must name an existing field and carry a value of its type and
range: an unknown key, a wrong type or a value out of range raises :class:`ConfigError` naming the key.
YAML is read with :class:`ConfigLoader`, for which a number written with a leading zero is text: the
category id ``03001627`` stays itself instead of becoming the octal number 787351.
Keys that were removed (:data:`REMOVED_KEYS`) are refused with the reason, except in the ``config.yaml``
of an earlier training run, which records them and may still be resumed or exported.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from d2im_tf.data.categories import SYNTHETIC_CATEGORIES, category_id
from d2im_tf.errors import UserError

VARIANTS = ("baseline", "wsamp", "noback", "nolap", "full", "gl")
CODE_NORMS = ("none", "batch", "layer")
BASE_TARGETS = ("sdf", "coarse_sdf")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # Keras dtype policies
COMPAT_MODES = ("none", "reference")  # "reference": compute what the authors' PyTorch release computes
# Not a config key: points per call of the SDF function in mesh extraction, and per compiled decode of
# D2IMNet.predict_sdf. Smaller batches keep the decoder's activations ([n, 256] float32, 16 MB at 16,384
# points) near the CPU caches: per point, 16,384 evaluates 1.6× faster than 65,536 (docs/speed.md); much
# smaller batches pay the per-call overhead.
BATCH_POINTS = 16384


class ConfigError(UserError, ValueError):
    """A configuration file or override that does not match the schema."""


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader without YAML 1.1's octal integers: ``0755``, ``03001627`` are strings."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(
        r"""^(?:[-+]?0b[0-1_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+
                   |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$""",
        re.X,
    ),
    list("-+0123456789"),
)


def read_yaml(text: str):
    """``text`` parsed by :class:`ConfigLoader`."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 (a SafeLoader)


@dataclass
class DataConfig:
    root: str = "data/synthetic"
    split_dir: str = ""  # default: <root>/splits
    # more datasets of the same layout whose shapes join root's in training (each with its own splits/);
    # e.g. plain and varied renders mixed: root data/bundled, extra_roots [data/study]
    extra_roots: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=lambda: list(SYNTHETIC_CATEGORIES))
    num_points: int = 2048
    views: int = 36
    sdf_scale: float = 10.0  # SDF values are multiplied by this when loaded (docs/conventions.md, "Units")
    far_fraction: float = 0.0  # share of num_points drawn uniformly from the far-field samples (0: the paper)
    # share of those far-field draws taken from inside the shape (sdf < 0), the rest from outside;
    # 0: drawn uniformly over the box, whose inside share is the shape's share of its volume
    far_inside: float = 0.0
    # > 0: crop each training image to its object's box, resized so the box spans this share of the side,
    # the projection (SDF network) or the pose (camera network) adjusted by the crop (d2im_tf/data/framing.py);
    # 0: the renders as they are (the paper)
    framing_object_size: float = 0.0
    seed: int = 0  # the shuffling, views and points of the input stream, and the initial weights


@dataclass
class ModelConfig:
    variant: str = "full"  # one of VARIANTS (the ablation of the paper's Table 1, plus D²IM-Net_GL)
    image_size: int = 224
    encoder_width: int = 64  # channels of ResNet18's first stage; later stages double it
    global_dim: int = 128
    decoder_widths: list[int] = field(default_factory=lambda: [512, 256, 128, 64, 32])
    detail_channels: int = 64
    front_offset: float = 0.03  # test-time front/back test step along the viewing ray (normalised units)
    # "none" (the paper), "batch" or "layer": a normalisation of the global code (docs/training.md)
    code_norm: str = "none"
    # DISN's weighting of L_B and L_sdf: samples whose GT sdf < inside_threshold (normalised units; every
    # inside sample and the outside ones nearer than it) weigh inside_weight, the rest 1 (1: the paper; DISN: 4 at 0.01)
    inside_weight: float = 1.0
    inside_threshold: float = 0.01
    # λ of L_lap in the total L_B + L_sdf + λ·L_lap (1: the paper); the logged loss_lap stays unweighted
    laplacian_weight: float = 1.0
    # L_lap only where the coarse surface is flat: front points where the GT normals' divergence, averaged
    # over a Gaussian of laplacian_flat_sigma pixels, reaches laplacian_flat_tolerance (per pixel) are left
    # out (0: the paper, every front point near the surface; docs/notes/training_study.md, "Creases in the
    # Laplacian target")
    laplacian_flat_sigma: float = 0.0
    laplacian_flat_tolerance: float = 0.05
    # What L_B fits f_B to: "sdf", the ground-truth SDF (the paper), or "coarse_sdf", the SDF of the shape
    # without its relief (pc_sdf_coarse, written by make-data --coarse-sdf), which leaves the relief to the
    # maps (docs/notes/ablation.md, "A relief-free base target"); L_sdf always fits the fused f to the GT
    base_target: str = "sdf"
    point_frequencies: int = 0  # Fourier features of xyz for the base decoder, 2^k·π for k < this (0: the paper)
    # "none": this project's conventions; "reference": the authors' (world-frame decoder, BGR input,
    # bilinear lookup, their front/back test) for weights imported with `d2im import-torch`
    compat: str = "none"
    encoder_weights: str = ""  # torchvision resnet18 ImageNet file (.pth) to start the encoder from


@dataclass
class CameraConfig:
    backbone: str = "vgg16"  # "vgg16" (DISN) or "resnet18"
    translation: str = "full"  # "full" (DISN's paper, t in R^3) or "distance" (reference, 1-D)
    image_size: int = 224
    width: int = 64
    # The camera network's run: its own batch, length, learning rate (constant) and folder; the run
    # mechanics (steps_per_epoch, checkpoint_every, log_every, jit_compile, precision) are train's.
    learning_rate: float = 1e-4
    batch_size: int = 16
    epochs: int = 100
    points: int = 256  # surface points of the shape for the point-cloud loss
    out_dir: str = "runs/camera"
    # "reference": the authors' camera network (vgg16, distance, heads without ReLU, BGR input,
    # pose of the world frame); for weights imported with `d2im import-torch`
    compat: str = "none"
    backbone_weights: str = ""  # torchvision vgg16 / resnet18 ImageNet file (.pth) to start the backbone from
    # a camera network's run folder or a SavedModel bundling one (`d2im export`) to start from (fresh optimiser)
    init_from: str = ""


@dataclass
class TrainConfig:
    """The SDF network's run. Its run mechanics — ``steps_per_epoch``, ``checkpoint_every``,
    ``log_every``, ``jit_compile``, ``precision`` — apply to the camera network's run too, which
    takes its batch, epochs, learning rate and folder from ``camera`` (:mod:`d2im_tf.training.run`)."""

    batch_size: int = 16
    learning_rate: float = 5e-5
    lr_schedule: str = "constant"  # "constant" (the paper) or "cosine": decay to 1% over the run
    warmup_steps: int = 0  # linear warm-up from 1% of learning_rate (0: none)
    beta_1: float = 0.9
    weight_decay: float = 1e-5
    epochs: int = 400
    steps_per_epoch: int = 0  # 0: one pass over the training shapes
    checkpoint_every: int = 500
    log_every: int = 10  # steps between TensorBoard scalars
    image_every: int = 500  # steps between TensorBoard images
    preview_every_epochs: int = 10
    jit_compile: bool = False  # XLA
    # Keras dtype policy while training: "float32", "mixed_bfloat16" (convolutions in bfloat16, fast on
    # CPUs with AMX or AVX512-BF16) or "mixed_float16"; the point decoders, checkpoints and exports stay float32
    precision: str = "float32"
    out_dir: str = "runs/default"
    # an SDF network's run folder or exported SavedModel whose weights the run starts from, with a fresh
    # optimiser and schedule (fine-tuning; a resumed run restores its own checkpoint over them)
    init_from: str = ""
    # SDF network: keep an exponential moving average of the weights with this decay per step (0: none,
    # the paper); the run's result (export, init_from, evaluation) is then the averaged network
    ema_decay: float = 0.0


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "Config":
        """Choices and ranges; a :class:`ConfigError` naming the first key that is out of range."""
        for key, choices in _CHOICES.items():
            if self.get(key) not in choices:
                raise ConfigError(f"{key}: {self.get(key)!r} is not one of {', '.join(choices)}")
        if self.model.compat == "reference" and self.model.variant != "full":
            raise ConfigError(
                f"model.compat: 'reference' needs model.variant 'full' (the authors' network), "
                f"got {self.model.variant!r}"
            )
        camera_network = (self.camera.backbone, self.camera.translation)
        if self.camera.compat == "reference" and camera_network != ("vgg16", "distance"):
            raise ConfigError(
                "camera.compat: 'reference' needs camera.backbone 'vgg16' and camera.translation "
                f"'distance' (the authors' network), got {self.camera.backbone!r}, "
                f"{self.camera.translation!r}"
            )
        if self.model.base_target != "sdf" and self.model.variant in ("baseline", "wsamp"):
            raise ConfigError(
                f"model.base_target: {self.model.base_target!r} needs displacement maps to carry the relief; "
                f"the {self.model.variant!r} variant has none (use 'sdf')"
            )
        if self.model.compat == "reference" and (self.model.code_norm != "none" or self.model.point_frequencies):
            raise ConfigError(
                "model.compat: 'reference' is the authors' network: model.code_norm must be 'none' "
                "and model.point_frequencies 0"
            )
        for key, low in _MINIMUM.items():
            value = self.get(key)
            items = value if isinstance(value, list) else [value]
            if not items:
                raise ConfigError(f"{key}: must not be empty")
            if any(item < low for item in items):
                raise ConfigError(f"{key}: must be at least {low}, got {value}")
        for key in _POSITIVE:
            if not self.get(key) > 0:
                raise ConfigError(f"{key}: must be positive, got {self.get(key)}")
        for key, high in _BELOW.items():
            if not self.get(key) < high:
                raise ConfigError(f"{key}: must be less than {high}, got {self.get(key)}")
        for key, high in _AT_MOST.items():
            if not self.get(key) <= high:
                raise ConfigError(f"{key}: must be at most {high}, got {self.get(key)}")
        if self.model.image_size % 16:
            raise ConfigError(
                f"model.image_size: must be a multiple of 16 (the encoder halves it four times), "
                f"got {self.model.image_size}"
            )
        if self.camera.backbone == "vgg16" and self.camera.image_size < 32:
            raise ConfigError(f"camera.image_size: VGG16 needs at least 32, got {self.camera.image_size}")
        if self.model.variant == "gl" and len(self.model.decoder_widths) < 4:
            raise ConfigError(
                f"model.decoder_widths: the gl variant needs at least 4 widths, got {self.model.decoder_widths}"
            )
        for key in ("data.root", "train.out_dir", "camera.out_dir"):
            if not self.get(key).strip():
                raise ConfigError(f"{key}: must not be empty")
        if not self.data.categories or not all(c.strip() for c in self.data.categories):
            raise ConfigError(f"data.categories: must list at least one category id, got {self.data.categories}")
        return self

    def get(self, key: str):
        """The value of ``"section.name"``."""
        section, name = key.split(".")
        return getattr(getattr(self, section), name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Smallest allowed values (lists: of every item), and upper bounds (exclusive).
_MINIMUM = {
    "data.num_points": 1,
    "data.views": 1,
    "model.image_size": 16,
    "model.encoder_width": 1,
    "model.global_dim": 1,
    "model.decoder_widths": 1,
    "model.detail_channels": 1,
    "model.front_offset": 0.0,
    "camera.image_size": 16,
    "camera.width": 1,
    "camera.batch_size": 1,
    "camera.epochs": 1,
    "camera.points": 1,
    "train.batch_size": 1,
    "train.beta_1": 0.0,
    "train.weight_decay": 0.0,
    "train.epochs": 1,
    "train.steps_per_epoch": 0,
    "train.checkpoint_every": 1,
    "train.log_every": 1,
    "train.image_every": 1,
    "train.preview_every_epochs": 1,
    "train.warmup_steps": 0,
    "model.point_frequencies": 0,
    "data.far_fraction": 0.0,
    "data.far_inside": 0.0,
    "train.ema_decay": 0.0,
    "model.laplacian_weight": 0.0,
    "model.laplacian_flat_sigma": 0.0,
    "data.framing_object_size": 0.0,
}
_POSITIVE = (
    "data.sdf_scale",
    "camera.learning_rate",
    "train.learning_rate",
    "model.inside_weight",
    "model.laplacian_flat_tolerance",
)
_BELOW = {"train.beta_1": 1.0, "data.far_fraction": 1.0, "train.ema_decay": 1.0}
_AT_MOST = {"data.far_inside": 1.0, "data.framing_object_size": 1.0}
_CHOICES = {
    "model.variant": VARIANTS,
    "camera.backbone": ("vgg16", "resnet18"),
    "camera.translation": ("distance", "full"),
    "model.code_norm": CODE_NORMS,
    "model.base_target": BASE_TARGETS,
    "train.lr_schedule": LR_SCHEDULES,
    "model.compat": COMPAT_MODES,
    "camera.compat": COMPAT_MODES,
    "train.precision": PRECISIONS,
}


# Keys that no longer exist → why; refused in a config file or override, skipped in a run's config.yaml.
REMOVED_KEYS = {
    "data.image_size": "the pipeline resizes the images to model.image_size (camera.image_size for the camera)",
    "data.shuffle_buffer": "the input stream is shuffled by a permutation per epoch, with no buffer",
    "train.mixed_precision": "set train.precision to mixed_float16 or mixed_bfloat16 instead",
}


def _check_type(key: str, value, annotation):
    """Return ``value`` converted to ``annotation`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(annotation)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return [_check_type(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"[-+]?0[0-9]+", value):  # "010": ten, not octal eight
            return int(value)
    elif annotation is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return number
    elif annotation is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")


def _field_types(cls) -> dict:
    return typing.get_type_hints(cls)


def _apply(section_obj, section_name: str, values: dict, skip_removed: bool = False):
    if not isinstance(values, dict):
        raise ConfigError(f"{section_name}: expected a mapping, got {type(values).__name__}")
    types_ = _field_types(type(section_obj))
    for key, value in values.items():
        full = f"{section_name}.{key}"
        if full in REMOVED_KEYS:
            if skip_removed:
                continue
            raise ConfigError(f"{full}: removed, delete it ({REMOVED_KEYS[full]})")
        if key not in types_:
            raise ConfigError(f"{full}: unknown key (known: {', '.join(types_)})")
        if full == "data.categories" and isinstance(value, list):
            value = [category_id(item) for item in value]
        setattr(section_obj, key, _check_type(full, value, types_[key]))


def _set_dict(config: Config, values: dict, skip_removed: bool = False) -> None:
    sections = _field_types(Config)
    for name, section_values in (values or {}).items():
        if name not in sections:
            raise ConfigError(f"{name}: unknown section (known: {', '.join(sections)})")
        _apply(getattr(config, name), name, section_values, skip_removed)


def parse_override(text: str) -> tuple[str, str, object]:
    """``"model.image_size=64"`` → ``("model", "image_size", 64)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"{text}: override must look like section.key=value")
    key, raw = text.split("=", 1)
    if key.count(".") != 1:
        raise ConfigError(f"{key}: override key must look like section.key")
    section, name = key.split(".")
    try:
        return section, name, read_yaml(raw) if raw != "" else ""
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or " ".join(str(error).split())
        raise ConfigError(f"{key}: the value {raw!r} is not valid YAML ({problem})") from None


def load_config(
    path: str | Path | None = None, overrides: typing.Iterable[str] = (), skip_removed: bool = False
) -> Config:
    """Build a Config from defaults, then the YAML file at ``path``, then ``overrides``.

    ``skip_removed``: ignore the :data:`REMOVED_KEYS` in the file (a run's recorded ``config.yaml``)."""
    config = Config()
    if path is not None:
        path = Path(path)
        try:
            values = read_yaml(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a folder, not a config file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file (a YAML config is expected)") from None
        except OSError as error:
            raise ConfigError(f"{path}: cannot read ({error.strerror or error})") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        try:
            _set_dict(config, values, skip_removed)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
    for text in overrides:
        section, name, value = parse_override(text)
        _set_dict(config, {section: {name: value}})
    return config.validate()


def add_config_arguments(
    parser,
    default_help: str = "default: built-in defaults, the same as configs/default.yaml",
    default: str | None = None,
) -> None:
    """Add ``--config FILE`` (``default``: None for the built-in defaults) and repeatable
    ``--set section.key=value`` to an argparse parser."""
    parser.add_argument("--config", default=default, help=f"YAML config ({default_help})")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set model.image_size=64 (repeatable)",
    )


def config_from_arguments(args) -> Config:
    """The Config named by the arguments of :func:`add_config_arguments`."""
    return load_config(args.config, args.overrides)
