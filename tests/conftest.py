import textwrap

import pytest
import torch

import diffkit


@pytest.fixture(autouse=True)
def one_thread():
    """Tests use tiny models: on one thread they run faster than with intra-op hand-offs between cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Install fake plugin distributions: a module plus dist-info metadata in a sys.path folder, as pip lays them."""

    def install(dist, module, source):
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{dist}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[diffkit]\n{module} = {module}\n")

    monkeypatch.syspath_prepend(str(tmp_path))
    yield install
    monkeypatch.undo()
    diffkit.reload_plugins()


def tiny_config(tmp_path, **sections):
    """A raw config mapping for a tiny run in tmp_path; sections given here replace the defaults."""
    config = {
        "run": {"dir": str(tmp_path / "run"), "seed": 0, "device": "cpu"},
        "data": {"dataset": "shapes", "options": {"num_examples": 24, "size": 8, "channels": 1}, "batch_size": 4},
        "model": {"backbone": "unet2d",
                  "options": {"in_channels": 1, "channels": [8, 16], "num_res_blocks": 1, "attention_levels": []}},
        "diffusion": {"timesteps": 50},
        "train": {"steps": 6, "lr": 1e-3, "ema_decay": 0.9, "ema_start": 2, "log_every": 1},
        "sample": {"num": 2, "sampler": "ddim", "steps": 3},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return config


@pytest.fixture
def tiny(tmp_path):
    return lambda **sections: tiny_config(tmp_path, **sections)
