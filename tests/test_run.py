"""The run as a Python object (issue 13): train → open → sample → continue → fine-tune, the README's
story step by step, and sampling at scale (micro-batches, numbered files, fill-in, torchrun)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import diffkit
from diffkit import run as run_module
from diffkit.config import ConfigError
from diffkit.generate import sample_seed
from tiny_runs import sample_in_one_and_two_processes


@pytest.fixture
def trained(tiny):
    return diffkit.train(tiny(train={"steps": 2}), progress=False)


def test_train_from_a_mapping_with_overrides_returns_the_run(tiny):
    run = diffkit.train(tiny(), overrides={"train.steps": 3, "sample.num": 1}, progress=False)
    assert isinstance(run, diffkit.Run)
    assert [p.name for p in run.checkpoints()] == ["step_00000003"]
    assert run.config.train.steps == 3 and run.info.example_shape == [1, 8, 8]
    assert [row["step"] for row in run.metrics()] == [1, 2, 3]


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_train_inside_no_grad_still_trains(tiny, context):
    """A benchmark or notebook that calls train() inside torch.no_grad() gets a trained run, not an autograd error."""
    with context():
        run = diffkit.train(tiny(), overrides={"train.steps": 3, "sample.num": 1}, progress=False)
    assert [row["step"] for row in run.metrics()] == [1, 2, 3]
    assert all(np.isfinite(row["loss"]) for row in run.metrics())


def test_open_sample_continue_and_fine_tune(trained, tmp_path, tiny):
    run = diffkit.open_run(trained.path)
    diffusion = run.diffusion()  # EMA weights, eval mode, newest checkpoint
    assert not diffusion.training and diffusion.input_shape == (1, 8, 8)
    paths = run.sample(4, sampler="ddim", steps=3)
    assert [p.name for p in paths] == ["000000.png", "000001.png", "000002.png", "000003.png", "grid.png"]
    assert paths[0].parent.parent == run.samples_dir

    run.resume(steps=4, progress=False)
    assert run.latest_checkpoint().name == "step_00000004"

    tuned = diffkit.train(tiny(run={"dir": str(tmp_path / "tuned")}, train={"steps": 1, "lr": 1e-12}),
                          overrides={"train.init_from": str(run.path)}, progress=False)
    start = run.diffusion().state_dict()
    assert all(torch.allclose(v, start[k], atol=1e-6) for k, v in tuned.diffusion(ema=False).state_dict().items())


def test_a_moved_run_opens_and_samples_where_it_lies(trained, tmp_path):
    moved = tmp_path / "elsewhere"
    trained.path.rename(moved)
    run = diffkit.open_run(moved)
    assert run.config.run.dir == str(moved)
    assert run.sample(1, steps=2, sampler="ddim")[0].is_relative_to(moved)


def test_samples_do_not_depend_on_the_batch_they_were_made_in(trained, tmp_path):
    run = diffkit.open_run(trained.path)
    one = run.sample(5, sampler="ddpm", steps=4, batch_size=5, out=tmp_path / "a")
    two = run.sample(5, sampler="ddpm", steps=4, batch_size=2, out=tmp_path / "b")
    for a, b in zip(one[:5], two[:5]):
        assert a.read_bytes() == b.read_bytes()
    # Sample 3 alone, from its own generator, is the same sample again.
    generator = torch.Generator().manual_seed(sample_seed(0, 3))
    alone = run.diffusion().sample(1, sampler="ddpm", steps=4, generator=[generator])
    png = np.asarray(Image.open(one[3]), dtype=np.float32) / 127.5 - 1
    assert np.abs(png - alone[0, 0].clamp(-1, 1).numpy()).max() <= 1 / 127.5


def test_a_rerun_fills_in_what_is_missing_and_another_call_never_overwrites(trained):
    run = diffkit.open_run(trained.path)
    paths = run.sample(4, sampler="ddim", steps=3)
    before = {p: p.read_bytes() for p in paths[:4]}
    paths[2].unlink()
    stamp = paths[0].stat().st_mtime_ns
    again = run.sample(4, sampler="ddim", steps=3)
    assert again == paths and paths[2].read_bytes() == before[paths[2]]
    assert paths[0].stat().st_mtime_ns == stamp  # kept, not rewritten
    other = run.sample(4, sampler="ddim", steps=2)  # other settings: another folder
    assert other[0].parent != paths[0].parent and paths[0].read_bytes() == before[paths[0]]


def test_open_run_names_what_is_wrong(tmp_path):
    with pytest.raises(run_module.RunError, match="not found"):
        diffkit.open_run(tmp_path / "missing")
    with pytest.raises(run_module.RunError, match="'config.toml' is missing"):
        diffkit.open_run(tmp_path)
    with pytest.raises(ConfigError, match="num: the number of samples must be a positive integer"):
        run_module.Run(tmp_path).sample  # noqa: B018  (attribute exists)
        from diffkit.generate import generate

        class Fake:
            def sample_defaults(self):
                from diffkit.config import SampleSection
                return SampleSection()
        generate(Fake(), 0)


def test_two_processes_write_the_same_files_as_one(trained, tmp_path):
    args = ["sample", str(trained.path), "-n", "5", "--sampler", "ddpm", "--steps", "3", "--batch-size", "2",
            "--no-progress"]
    names = sample_in_one_and_two_processes(args, tmp_path / "one", tmp_path / "two")
    assert [n for n in names if n.endswith(".png")] == [f"{i:06d}.png" for i in range(5)] + ["grid.png"]
