"""Validation of a DISN-layout dataset: every file a training run will read, read once.

:func:`check_dataset` walks the split lists and reports what it finds (categories, shapes, views per
shape) and every missing or unreadable file, each as one line naming the file and the problem.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tqdm import tqdm

from d2im_tf.data import disn_format as fmt

SPLITS = ("train", "test")


@dataclass
class DatasetReport:
    """What :func:`check_dataset` found."""

    shapes: dict = field(default_factory=dict)  # (category, split) -> number of shapes listed
    views: Counter = field(default_factory=Counter)  # views per shape -> number of shapes
    problems: list = field(default_factory=list)  # one line each: "path: problem"
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
        lines.append(
            f"SDF samples with pc_gradients and density: {self.samples_with_extras}/{self.samples_checked}"
            + ("" if self.samples_with_extras == self.samples_checked else " (run `d2im preprocess`)")
        )
        lines.append(f"problems: {len(self.problems)}")
        lines.extend(f"  {p}" for p in self.problems)
        return "\n".join(lines)


def _check_shape(layout: fmt.DatasetLayout, category: str, shape: str, report: DatasetReport) -> None:
    def attempt(reader, path):
        try:
            return reader(path)
        except fmt.DataError as error:
            report.problems.append(str(error))
            return None

    metadata = attempt(fmt.read_metadata, layout.metadata_path(category, shape))
    if metadata is not None:
        report.views[len(metadata)] += 1
        for view in range(len(metadata)):
            attempt(fmt.read_image, layout.image_path(category, shape, view))
            attempt(fmt.read_normal_map, layout.normal_path(category, shape, view))
    samples = attempt(fmt.read_samples, layout.samples_path(category, shape))
    if samples is not None:
        report.samples_checked += 1
        report.samples_with_extras += samples.gradients is not None and samples.density is not None


def check_dataset(layout: fmt.DatasetLayout, progress: bool = True) -> DatasetReport:
    """Read every split list, metadata file, view, normal map and SDF file of the dataset."""
    report = DatasetReport()
    categories = layout.categories()
    if not categories:
        report.problems.append(f"{layout.split_dir}: no split lists (<category>_train.lst / _test.lst)")
        return report
    work = []
    for category in categories:
        for split in SPLITS:
            path = layout.split_path(category, split)
            if not path.exists():
                report.problems.append(f"{path}: file not found")
                continue
            shapes = fmt.read_split(path)
            report.shapes[(category, split)] = len(shapes)
            work.extend((category, shape) for shape in shapes)
    for category, shape in tqdm(work, desc="checking shapes", unit="shape", disable=not progress):
        _check_shape(layout, category, shape, report)
    return report
