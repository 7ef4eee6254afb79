"""Validation of a DISN-layout dataset: every file a training run will read, read once.

One validation serves ``d2im check-data`` and the start of ``d2im train`` / ``train-camera``:
:func:`check_dataset` walks the split lists and reports what it finds (categories, shapes, views per
shape) and every problem that would stop or silently spoil training, each as one line naming the
file and the problem; :func:`validate_for_training` runs it on the shapes a run will use and raises
the first problem before the first step. :class:`Requirements` holds what depends on a config
(views used, points drawn, whether densities are needed); without a config only the config-free
checks run.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from d2im_tf.data import disn_format as fmt
from d2im_tf.errors import UserError

SPLITS = ("train", "test")
MIN_VIEW_SIZE = 16  # pixels; smaller renders hold no detail for the network to learn
_VIEW_NAME = re.compile(r"^\d{2,}\.png$")


@dataclass(frozen=True)
class Requirements:
    """What a training run needs of each shape beyond readable files (0/None: not checked)."""

    views: int | None = None  # views used per shape (data.views); None: every view listed
    points: int = 0  # SDF samples drawn per example (data.num_points)
    surface_points: int = 0  # surface points drawn per example by the camera network (camera.points)
    gradients: bool = True  # pc_gradients (every variant)
    density: bool = True  # density (every variant but the Baseline)
    far_points: int = 0  # far-field samples drawn per example (data.far_fraction · data.num_points)

    @classmethod
    def for_training(cls, config, network: str = "both") -> "Requirements":
        """What training ``network`` (``"sdf"``, ``"camera"`` or ``"both"``) with ``config`` needs."""
        sdf = network in ("sdf", "both")
        return cls(
            views=config.data.views,
            points=config.data.num_points if sdf else 0,
            surface_points=config.camera.points if network in ("camera", "both") else 0,
            gradients=sdf,
            density=sdf and config.model.variant != "baseline",
            far_points=round(config.data.num_points * config.data.far_fraction) if sdf else 0,
        )


@dataclass
class DatasetReport:
    """What :func:`check_dataset` found."""

    shapes: dict = field(default_factory=dict)  # (category, split) -> number of shapes listed
    views: Counter = field(default_factory=Counter)  # views per shape -> number of shapes
    problems: list = field(default_factory=list)  # one line each: "path: problem"
    warnings: list = field(default_factory=list)  # one line each; do not fail the check
    samples_with_extras: int = 0  # shapes whose h5 has pc_gradients and density
    samples_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = []
        categories = sorted({c for c, _ in self.shapes})
        lines.append(f"categories: {len(categories)}")
        for category in categories:
            counts = ", ".join(f"{split} {self.shapes.get((category, split), 0)}" for split in SPLITS)
            lines.append(f"  {category}: {counts}")
        views = ", ".join(f"{v} views: {n} shapes" for v, n in sorted(self.views.items())) or "none"
        lines.append(f"views per shape: {views}")
        lines.append(f"SDF samples with pc_gradients and density: {self.samples_with_extras}/{self.samples_checked}")
        if self.warnings:
            lines.append(f"warnings: {len(self.warnings)}")
            lines.extend(f"  {w}" for w in self.warnings)
        lines.append(f"problems: {len(self.problems)}")
        lines.extend(f"  {p}" for p in self.problems)
        return "\n".join(lines)


@dataclass
class _ShapeResult:
    views: int | None = None  # views the shape offers (camera lines, capped by Requirements.views)
    metadata_path: object = None
    short_metadata: bool = False  # fewer camera lines than renders (reported already)
    problems: list = field(default_factory=list)
    has_extras: bool | None = None  # pc_gradients and density both present; None: samples unreadable
    lacks_needed: bool = False  # lacks pc_gradients or density that the requirements ask for


def _png_size(path, problems: list, what: str):
    """Decode a PNG fully (as training will); its ``(width, height)``, or None after a problem."""
    try:
        image = fmt.open_image(path)
    except fmt.DataError as error:
        problems.append(str(error))
        return None
    if image.format != "PNG":
        problems.append(f"{path}: holds {image.format or 'unknown'} data, not PNG (training decodes PNG only)")
        return None
    if image.width != image.height:
        problems.append(f"{path}: {what} is {image.width}×{image.height}; views must be square")
        return None
    if image.width < MIN_VIEW_SIZE:
        problems.append(f"{path}: {what} is {image.width}×{image.height}, smaller than {MIN_VIEW_SIZE}×{MIN_VIEW_SIZE}")
        return None
    return image.size


def _view_count(image_dir) -> int:
    """Number of ``NN.png`` renders in a shape's image folder."""
    try:
        return sum(1 for name in os.listdir(image_dir) if _VIEW_NAME.match(name))
    except OSError:
        return 0


def _check_shape(layout: fmt.DatasetLayout, category: str, shape: str, needs: Requirements) -> _ShapeResult:
    result = _ShapeResult(metadata_path=layout.metadata_path(category, shape))
    problems = result.problems
    try:
        metadata = fmt.read_metadata(result.metadata_path)
    except fmt.DataError as error:
        problems.append(str(error))
        metadata = None
    if metadata is not None:
        renders = _view_count(layout.image_dir(category, shape))
        if len(metadata) < renders:
            result.short_metadata = True
            problems.append(
                f"{result.metadata_path}: {len(metadata)} camera lines for {renders} views "
                f"(NN.png); every view needs its line"
            )
        used = len(metadata) if needs.views is None else min(len(metadata), needs.views)
        result.views = used
        for view in range(used):
            image_path = layout.image_path(category, shape, view)
            size = _png_size(image_path, problems, "the view")
            normal_path = layout.normal_path(category, shape, view)
            normal_size = _png_size(normal_path, problems, "the normal map")
            if size and normal_size and size != normal_size:
                problems.append(
                    f"{normal_path}: normal map is {normal_size[0]}×{normal_size[1]} but its view "
                    f"{image_path.name} is {size[0]}×{size[1]}"
                )
    samples_path = layout.samples_path(category, shape)
    try:
        samples = fmt.read_samples(samples_path)
    except fmt.DataError as error:
        problems.append(str(error))
        return result
    result.has_extras = samples.gradients is not None and samples.density is not None
    result.lacks_needed = (needs.gradients and samples.gradients is None) or (needs.density and samples.density is None)
    if needs.far_points:
        far = 0 if samples.far_samples is None or samples.far_gradients is None else len(samples.far_samples)
        if far < needs.far_points:
            problems.append(
                f"{samples_path}: {far} far-field samples (pc_sdf_uniform with pc_gradients_uniform), "
                f"fewer than the {needs.far_points} drawn per example (data.far_fraction); set "
                "data.far_fraction=0 or regenerate the data with `d2im make-data`"
            )
    count = len(samples.samples)
    if count < needs.points:
        problems.append(
            f"{samples_path}: {count} SDF samples, fewer than the {needs.points} drawn per example (data.num_points)"
        )
    if needs.surface_points:
        surface = len(samples.surface_points) if samples.surface_points is not None else count // 8
        if surface < needs.surface_points:
            problems.append(
                f"{samples_path}: {surface} surface points, fewer than the {needs.surface_points} "
                "the camera network draws (camera.points)"
            )
    return result


def _read_splits(layout: fmt.DatasetLayout, categories, splits, report: DatasetReport) -> list:
    work = {}  # (category, shape) in order, each once
    for category in categories:
        for split in splits:
            path = layout.split_path(category, split)
            if not path.exists():
                report.problems.append(f"{path}: file not found")
                continue
            try:
                shapes = fmt.read_split(path)
            except fmt.DataError as error:
                report.problems.append(str(error))
                continue
            report.shapes[(category, split)] = len(shapes)
            if not shapes and split == "train":
                report.problems.append(f"{path}: lists no shapes; category {category} would not be trained")
            elif not shapes:
                report.warnings.append(f"{path}: lists no shapes; evaluation and previews skip category {category}")
            work.update(dict.fromkeys((category, shape) for shape in shapes))
    return list(work)


def check_dataset(
    layout: fmt.DatasetLayout, progress: bool = True, needs: Requirements | None = None, categories=None, splits=SPLITS
) -> DatasetReport:
    """Read every split list, metadata file, view, normal map and SDF file of the dataset.

    ``categories`` default to every category with a split list; ``needs`` (default: the config-free
    checks) adds what a given config requires.
    """
    needs = needs or Requirements()
    report = DatasetReport()
    if categories is None:
        categories = layout.categories()
        if not categories:
            report.problems.append(f"{layout.split_dir}: no split lists (<category>_train.lst / _test.lst)")
            return report
    work = _read_splits(layout, categories, splits, report)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # PNG decoding frees the GIL
        results = list(
            tqdm(
                pool.map(lambda pair: _check_shape(layout, *pair, needs), work),
                total=len(work),
                desc="checking shapes",
                unit="shape",
                disable=not progress,
            )
        )
    lacking = 0
    for result in results:
        report.problems.extend(result.problems)
        if result.views is not None:
            report.views[result.views] += 1
        if result.has_extras is not None:
            report.samples_checked += 1
            report.samples_with_extras += result.has_extras
            lacking += result.lacks_needed
    if lacking:
        report.problems.append(
            f"{layout.root / 'SDF_v1'}: {lacking} of {report.samples_checked} ori_sample.h5 "
            f"files lack pc_gradients/density, which training needs; run `d2im preprocess "
            f"{layout.root}`"
        )
    if len(report.views) > 1:  # the input pipeline uses the smallest number of views for every shape
        common = max(report.views, key=lambda v: (report.views[v], v))
        for result in results:
            if result.views is not None and result.views < common and not result.short_metadata:
                report.problems.append(
                    f"{result.metadata_path}: {result.views} views where most shapes have "
                    f"{common}; training would use {result.views} views of every shape "
                    f"(set data.views={result.views} if that is meant)"
                )
    return report


def validate_for_training(config, network: str, splits=("train",), progress: bool = False) -> list[DatasetReport]:
    """Check the shapes a run of ``network`` (``"sdf"`` or ``"camera"``) will read, in ``data.root`` and
    each of ``data.extra_roots``; raise the first problem as a :class:`UserError` (one line) before
    anything is trained or written. One report per dataset."""
    reports = []
    roots = [config.data.root, *config.data.extra_roots]
    for index, root in enumerate(roots):
        if not Path(root).is_dir():
            key = "data.root" if index == 0 else "data.extra_roots"
            raise UserError(f"{root}: dataset folder not found ({key})")
    try:
        sets = fmt.DatasetLayout.all_from_config(config)
    except fmt.DataError as error:
        raise UserError(str(error)) from None
    for layout, categories in sets:
        needs = Requirements.for_training(config, network)
        report = check_dataset(layout, progress, needs, categories=categories, splits=splits)
        if report.problems:
            more = len(report.problems) - 1
            hint = f" (and {more} more; `d2im check-data {layout.root}` lists them)" if more else ""
            raise UserError(f"{report.problems[0]}{hint}")
        reports.append(report)
    return reports
