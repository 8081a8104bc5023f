"""The package list, found rather than written down: every folder of the repository with an
__init__.py (nested ones included, e.g. tools/fuzz) installs as distributeai.<its dotted path>;
tests/ does not install. Everything else (metadata, dependencies, package data) is in
pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[f"distributeai.{name}" for name in find_packages(exclude=["tests", "tests.*"])],
    # `distributeai` is the repository root; it has no __init__.py, so it stays an implicit
    # namespace package and nothing but the packages above lands in site-packages.
    package_dir={"distributeai": "."},
)
