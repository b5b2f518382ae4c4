"""The tiny run every trainer test starts from (importable by name, unlike a conftest)."""

import os
import subprocess
import sys


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


def sample_in_one_and_two_processes(args, one, two) -> list[str]:
    """Run `diffkit sample ARGS` in one process into ``one`` and as the README writes it under torchrun
    (`torchrun --nproc_per_node 2 -m diffkit.cli sample …`) into ``two``; assert that both wrote the same
    files, byte for byte, and return their names."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "diffkit.cli", *args, "--out", str(one)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "diffkit.cli", *args, "--out", str(two)], capture_output=True, text=True, env=env,
                            timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir())
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    return names
