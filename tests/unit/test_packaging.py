"""The wheel holds shared, producer and worker (typed), and nothing of devtools, bench or tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from producer.cli import main

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "producer", "worker")
# Copied into the build folder: everything the wheel could pick up, left-out folders included.
SOURCES = (*PACKAGES, "devtools", "bench", "tests", "pyproject.toml", "README.md")
_IGNORED = shutil.ignore_patterns("__pycache__", "node_modules", "*.pyc", ".hypothesis")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """Build the wheel from a copy of the checkout (offline, no dependencies)."""
    root = tmp_path_factory.mktemp("wheel")
    source, out = root / "source", root / "out"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=_IGNORED)
        else:
            shutil.copy2(REPO / name, source / name)
    offline = ["--no-deps", "--no-build-isolation", "--no-index", "--quiet"]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "-w", str(out), *offline],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("claude_queue-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


@pytest.mark.slow
def test_the_wheel_holds_only_the_three_packages(wheel: zipfile.ZipFile) -> None:
    wheel_files = wheel.namelist()
    top_levels = {name.split("/", 1)[0] for name in wheel_files}
    assert {top for top in top_levels if not top.endswith(".dist-info")} == set(PACKAGES)
    for package in PACKAGES:
        assert f"{package}/py.typed" in wheel_files
        assert f"{package}/__init__.py" in wheel_files
    # Sub-packages come along (e.g. shared/runstore/ when it exists in the checkout).
    for package_init in REPO.glob("*/*/__init__.py"):
        relative = package_init.relative_to(REPO).as_posix()
        if relative.split("/", 1)[0] in PACKAGES:
            assert relative in wheel_files
    assert not [name for name in wheel_files if "fake_anthropic" in name or "conftest" in name]


@pytest.mark.slow
def test_the_wheel_installs_the_console_script(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "claude-queue = producer.entry:main" in wheel.read(entry_points).decode()


def test_version_flag_prints_the_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("claude-queue ")
    assert result.output.split()[1][0].isdigit()


def test_every_package_is_marked_typed() -> None:
    for package in PACKAGES:
        assert (REPO / package / "py.typed").is_file()
