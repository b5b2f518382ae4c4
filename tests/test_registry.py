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


def test_a_name_claimed_twice_is_disabled_alone_and_choosing_it_names_both(installed):
    installed("first-dist", "first_plugin", TINY.format(name="dup"))
    installed("second-dist", "second_plugin", TINY.format(name="dup"))
    with pytest.warns(RuntimeWarning, match="'dup' is claimed by .*the name is disabled"):
        registry = diffkit.reload_plugins()
    assert "dup" not in registry.backbones and "unet2d" in registry.backbones
    with pytest.raises(PluginError) as info:
        diffkit.create_backbone("dup")
    message = str(info.value)
    assert "'dup'" in message and "first-dist" in message and "second-dist" in message
    assert "DIFFKIT_DISABLE_THIRD_PARTY_PLUGINS=1" in message


def test_a_plugin_claiming_a_builtin_name_leaves_everything_else_usable(installed, capsys, tmp_path, tiny):
    from diffkit.cli import main

    installed("squatter-dist", "squatter_plugin", TINY.format(name="unet2d"))
    with pytest.warns(RuntimeWarning, match="'unet2d' is claimed"):
        diffkit.reload_plugins()
    assert main(["plugins"]) == 0  # the listing still works and shows the clash
    out = capsys.readouterr().out
    assert "disabled: backbone name 'unet2d' is claimed" in out and "squatter-dist" in out
    assert any(line.split()[:1] == ["unet1d"] for line in out.splitlines())
    diffkit.create_backbone("unet3d", channels=[8], attention_levels=[])  # the others are untouched
    config = tmp_path / "c.toml"
    import tomli_w

    config.write_text(tomli_w.dumps(tiny()))
    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "squatter-dist" in err and "DIFFKIT_DISABLE_THIRD_PARTY_PLUGINS=1" in err


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
