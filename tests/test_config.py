import pytest

from diffkit.config import ConfigError, load_config, parse_value, validate


def minimal(**extra):
    raw = {"data": {"dataset": "shapes"}, "model": {"backbone": "unet2d"}}
    for key, value in extra.items():
        raw.setdefault(key, {}).update(value)
    return raw


@pytest.mark.parametrize(
    "raw, message",
    [
        (minimal(train={"lrr": 1e-3}), "unknown key 'train.lrr' (did you mean 'train.lr'?); accepted keys in [train]: "),
        (minimal(train={"lr": "fast"}), "key 'train.lr': Input should be a valid number (got 'fast')"),
        (minimal(train={"steps": 0}), "key 'train.steps': Input should be greater than or equal to 1"),
        (minimal(train={"steps": "10"}), "key 'train.steps': Input should be a valid integer"),
        (minimal(sample={"sampler": "heun"}), "key 'sample.sampler': unknown sampler 'heun'"),
        (minimal(diffusion={"schedule": "sigmoid"}), "key 'diffusion.schedule': Input should be 'linear' or 'cosine'"),
        (minimal(sample={"dc_offset": "highpass"}), "key 'sample.dc_offset': Input should be 'remove' or 'keep'"),
        (minimal(sample={"nyquist": "lowpass"}), "key 'sample.nyquist': Input should be 'remove' or 'keep'"),
        (minimal(sample={"noise_gate": -1}), "key 'sample.noise_gate': Input should be greater than or equal to 0"),
        (minimal(sample={"noise_gate": float("inf")}), "key 'sample.noise_gate': Input should be a finite number"),
        (minimal(sample={"churn": -0.5}), "key 'sample.churn': Input should be greater than or equal to 0"),
        (minimal(sample={"churn": float("nan")}), "key 'sample.churn': Input should be a finite number"),
        (minimal(sample={"churn_stop": -1}), "key 'sample.churn_stop': Input should be greater than or equal to 0"),
        (minimal(sample={"churn_stop": 2.5}), "key 'sample.churn_stop': Input should be a valid integer"),
        (minimal(diffusion={"schedule_shift": 0}), "key 'diffusion.schedule_shift': Input should be greater than 0"),
        (minimal(diffusion={"schedule_shift": float("nan")}), "key 'diffusion.schedule_shift': Input should be a finite"),
        ({"model": {"backbone": "unet2d"}}, "missing required key 'data'"),
        (minimal(extra={"x": 1}), "unknown key 'extra'"),
    ],
)
def test_bad_configs_fail_with_one_line_naming_the_key(raw, message):
    with pytest.raises(ConfigError) as info:
        validate(raw)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_overrides_and_files(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[data]\ndataset = "shapes"\n[model]\nbackbone = "unet2d"\n')
    config = load_config(path, ["train.steps=7", "model.options.channels=[8, 16]", "run.dir=runs/x", "train.lr=1e-3"])
    assert config.train.steps == 7 and config.model.options["channels"] == [8, 16]
    assert config.run.dir == "runs/x" and config.train.lr == 1e-3
    with pytest.raises(ConfigError, match="unknown key 'train.stepz'"):
        load_config(path, ["train.stepz=7"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(path, ["train.steps"])
    with pytest.raises(ConfigError, match="config file '.*nope.toml' not found"):
        load_config(tmp_path / "nope.toml")
    path.write_text("[data\n")
    with pytest.raises(ConfigError, match="c.toml: invalid TOML"):
        load_config(path)


def test_saved_config_round_trips():
    config = validate(minimal(train={"steps": 3}))
    import tomllib

    assert validate(tomllib.loads(config.to_toml())) == config


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("true") is True and parse_value("[1, 2]") == [1, 2]
    assert parse_value("shapes") == "shapes" and parse_value('"a b"') == "a b"


def test_cond_dim_follows_the_conditioner_or_is_checked():
    from diffkit.build import build_diffusion

    info = [1, 8, 8]
    raw = minimal(model={"options": {"in_channels": 1, "channels": [8, 16], "attention_levels": []},
                         "conditioner": {"name": "labels", "options": {"num_classes": 3, "dim": 12}}})
    diffusion = build_diffusion(validate(raw), info)
    assert diffusion.model.cond_dim == 12
    raw["model"]["options"]["cond_dim"] = 16
    with pytest.raises(ConfigError, match="model.options.cond_dim is 16 but the 'labels' conditioner produces 12"):
        build_diffusion(validate(raw), info)


def test_schedule_shift_reaches_the_built_engine():
    import torch

    from diffkit.build import build_diffusion
    from diffkit.schedules import make_beta_schedule

    raw = minimal(model={"options": {"in_channels": 1, "channels": [8, 16], "attention_levels": []}},
                  diffusion={"schedule": "cosine", "timesteps": 100})
    plain = build_diffusion(validate(raw), [1, 8, 8])
    assert torch.equal(plain.betas, make_beta_schedule("cosine", 100))
    raw["diffusion"]["schedule_shift"] = 3
    shifted = build_diffusion(validate(raw), [1, 8, 8])
    assert torch.equal(shifted.betas, make_beta_schedule("cosine", 100, 3.0))
    assert (shifted.alphas_cumprod < plain.alphas_cumprod).all()  # noisier at every step
