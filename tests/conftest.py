import textwrap

import pytest
import torch

import diffkit
from tiny_runs import tiny_config


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


@pytest.fixture
def tiny(tmp_path):
    return lambda **sections: tiny_config(tmp_path, **sections)
