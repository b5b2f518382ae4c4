"""The tiny run every trainer test starts from (importable by name, unlike a conftest)."""


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
