"""The README's Python, run as written (from a scratch folder, as a user pasting it would)."""

import re
from pathlib import Path

import torch

import diffkit

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_engine_snippet_runs_as_written_and_its_ema_file_restores_the_average(tmp_path, monkeypatch):
    [code] = [block for block in python_blocks() if "create_backbone(\"unet1d\"" in block]
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(code, "README.md", "exec"), names)
    audio, ema = names["audio"], names["ema"]
    assert audio.shape == (4, 1, 16384) and torch.isfinite(audio).all()
    assert names["loss"].ndim == 0 and any(p.grad is not None for p in names["diffusion"].parameters())
    restored = diffkit.EMA(names["diffusion"], decay=0.5, start_step=0)
    with torch.no_grad():
        for p in restored.model.parameters():
            p.add_(1.0)  # weights the file must overwrite
    restored.load_state_dict(torch.load(tmp_path / "ema.pt", weights_only=True))
    assert restored.counters() == ema.counters() == {"decay": 0.9999, "start_step": 2000, "update_every": 1,
                                                     "warmup": False, "num_updates": 1}
    theirs = ema.model.state_dict()
    assert all(torch.equal(value, theirs[key]) for key, value in restored.model.state_dict().items())
