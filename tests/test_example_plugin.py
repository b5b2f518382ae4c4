"""The third-party example package is found through its installed entry-point metadata, offline."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import diffkit
from diffkit.registry import DISABLE_ENV, get_registry
from diffkit.testing import check_backbone

EXAMPLE = Path(__file__).parents[1] / "examples" / "diffkit-example-plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``pip install`` the example (a copy, so no build files land in the repository) into a folder on sys.path."""
    root = tmp_path_factory.mktemp("example")
    source, target = root / "source", root / "site"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    # --no-index: no network; --no-build-isolation: build with the setuptools already installed.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    sys.path.insert(0, str(target))
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        for name in [m for m in sys.modules if m.split(".")[0] == "diffkit_example_plugin"]:
            del sys.modules[name]
        diffkit.reload_plugins()


def test_installed_example_is_discovered_with_its_distribution(installed):
    assert (next(installed.glob("diffkit_example_plugin-*.dist-info")) / "entry_points.txt").read_text().split() == [
        "[diffkit]", "tinyconv", "=", "diffkit_example_plugin.plugin"]
    diffkit.reload_plugins()
    assert "tinyconv" in diffkit.available_backbones()
    entry = get_registry().backbones["tinyconv"]
    assert (entry.distribution, entry.plugin) == ("diffkit-example-plugin", "tinyconv")
    assert get_registry().backbones["unet2d"].distribution == "diffkit"  # the built-ins are still there


@pytest.mark.parametrize("dims, shape", [(1, (1, 16)), (2, (3, 8, 8)), (3, (1, 4, 4, 4))])
def test_the_example_backbone_passes_the_conformance_checks(installed, dims, shape):
    diffkit.reload_plugins()
    check_backbone("tinyconv", input_shape=shape, cond_dim=4, dims=dims, in_channels=shape[0], width=8, depth=2,
                   gradient_checkpointing=dims == 3)


def test_the_example_is_hidden_when_third_party_plugins_are_off(installed, monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "1")
    diffkit.reload_plugins()
    assert "tinyconv" not in diffkit.available_backbones()
    assert "transformer" in diffkit.available_backbones()
