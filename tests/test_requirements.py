"""The pinned install: constraints.txt pins every requirement and every dependency of the pinned set
to one version that satisfies all of them, and this environment (made by ``make``) is that set."""

import re
from importlib import metadata

import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import ROOT


def pins() -> dict:
    """constraints.txt → {canonical name: Version}; every line must be ``name==version``."""
    result = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert match, f"constraints.txt: not an exact pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in result, f"constraints.txt: {name} pinned twice"
        result[name] = Version(match.group(2))
    return result


def project_requirements() -> list[Requirement]:
    """requirements.txt and pyproject.toml's dependencies (with the test extra)."""
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    return [Requirement(text) for text in [*lines, *declared] if text]


def test_every_requirement_is_pinned_within_its_range():
    pinned = pins()
    for requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement} has no pin in constraints.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"constraints.txt pins {name}=={pinned[name]}, outside {requirement}"
        )


def test_the_pinned_set_is_closed_and_consistent():
    """What pip's resolver checks: each pinned package's own requirements (for this platform) are
    pinned too, at versions they accept. Read from the installed metadata of the pinned versions."""
    pinned = pins()
    environment = {**default_environment(), "extra": ""}
    for name in pinned:
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue  # another platform's, or an optional extra's
            dependency = canonicalize_name(requirement.name)
            assert dependency in pinned, f"{name} needs {requirement}, which constraints.txt does not pin"
            assert requirement.specifier.contains(pinned[dependency], prereleases=True), (
                f"{name} needs {requirement}, constraints.txt pins {pinned[dependency]}"
            )


def test_this_environment_is_the_pinned_one():
    for name, version in pins().items():
        installed = metadata.version(name)
        assert Version(installed) == version, f"{name} {installed} installed, {version} pinned"


def test_package_data_covers_every_non_python_file():
    """A wheel holds what pyproject.toml's package-data lists: every non-.py file of the package that
    the code reads at run time (the TF.js client's script, npm manifest and lockfile) must be listed."""
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package = ROOT / "d2im_tf"
    listed = {path for pattern in settings["package-data"]["d2im_tf"] for path in package.glob(pattern)}
    present = {
        path
        for path in package.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    }
    assert present, "no data files found"
    assert present <= listed, sorted(str(path.relative_to(ROOT)) for path in present - listed)
