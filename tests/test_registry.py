"""Plugin discovery through real entry-point metadata (a dist-info folder on sys.path, as pip writes it)."""

import warnings

import pytest

import diffkit
from diffkit.registry import DISABLE_ENV, PluginError, get_registry


TINY = """
    import torch.nn as nn
    import diffkit

    class Tiny(nn.Module):
        def __init__(self, channels=1):
            super().__init__()
            self.channels = channels

        def forward(self, x, t, cond=None):
            return x

    @diffkit.hookimpl
    def diffkit_register_backbones(register):
        register("{name}", Tiny, "a test backbone")
"""


def test_builtins_come_from_diffkits_own_entry_points():
    registry = diffkit.reload_plugins()
    assert {"unet1d", "unet2d", "unet3d"} <= set(diffkit.available_backbones())
    assert "labels" in diffkit.available_conditioners()
    assert registry.backbones["unet2d"].distribution == "diffkit"
    assert registry.backbones["unet2d"].plugin == "unet"


def test_a_third_party_distribution_is_discovered(installed):
    installed("acme-denoisers", "acme_plugin", TINY.format(name="acme"))
    diffkit.reload_plugins()
    assert "acme" in diffkit.available_backbones()
    assert get_registry().backbones["acme"].distribution == "acme-denoisers"
    model = diffkit.create_backbone("acme", channels=2)
    assert model.channels == 2


def test_two_plugins_claiming_one_name_is_an_error_naming_both(installed):
    installed("first-dist", "first_plugin", TINY.format(name="dup"))
    installed("second-dist", "second_plugin", TINY.format(name="dup"))
    with pytest.raises(PluginError) as info:
        diffkit.reload_plugins()
    message = str(info.value)
    assert "'dup'" in message and "first-dist" in message and "second-dist" in message


def test_a_broken_plugin_is_named_and_the_others_still_load(installed):
    installed("broken-dist", "broken_plugin", "raise ImportError('needs libfoo')\n")
    installed("good-dist", "good_plugin", TINY.format(name="good"))
    with pytest.warns(RuntimeWarning, match="broken-dist.*needs libfoo"):
        registry = diffkit.reload_plugins()
    assert "good" in registry.backbones and "unet2d" in registry.backbones
    assert len(registry.failures) == 1 and "broken_plugin" in registry.failures[0]


def test_a_plugin_raising_in_its_hook_is_named(installed):
    installed("raising-dist", "raising_plugin", """
        import diffkit

        @diffkit.hookimpl
        def diffkit_register_backbones(register):
            raise RuntimeError("boom")
    """)
    with pytest.warns(RuntimeWarning, match="raising-dist.*boom"):
        registry = diffkit.reload_plugins()
    assert "unet2d" in registry.backbones


def test_third_party_plugins_can_be_switched_off(installed, monkeypatch):
    installed("acme-denoisers", "acme_plugin", TINY.format(name="acme"))
    monkeypatch.setenv(DISABLE_ENV, "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        diffkit.reload_plugins()
    assert "acme" not in diffkit.available_backbones()
    assert "unet2d" in diffkit.available_backbones()


def test_unknown_names_list_what_is_available():
    diffkit.reload_plugins()
    with pytest.raises(PluginError, match="unknown backbone 'unet4d'; available backbones: .*unet1d, unet2d, unet3d"):
        diffkit.create_backbone("unet4d")
    with pytest.raises(PluginError, match="unknown conditioner 'text'; available conditioners: .*labels"):
        diffkit.create_conditioner("text")


def test_bad_options_name_the_backbone():
    with pytest.raises(TypeError, match="backbone 'unet2d' \\(from diffkit\\)"):
        diffkit.create_backbone("unet2d", colour=3)
