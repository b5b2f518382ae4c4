import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import tomli_w
from safetensors.torch import load_file

from diffkit.checkpoint import list_checkpoints
from diffkit.config import ConfigError, validate
from diffkit.trainer import Trainer, TrainingError

ROOT = Path(__file__).resolve().parents[1]


def train(raw, resume=False):
    return Trainer(validate(raw), resume=resume, progress=False).run()


def weights(run, step, name="model"):
    return load_file(str(run / "checkpoints" / f"step_{step:08d}" / f"{name}.safetensors"))


def test_a_run_writes_checkpoints_samples_metrics_and_a_loss_curve(tiny):
    run = train(tiny(train={"steps": 4, "checkpoint_every": 2, "keep_checkpoints": 1}))
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_00000004"]
    assert (run / "samples" / "step_00000004.png").is_file()
    assert (run / "loss.png").stat().st_size > 1000
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and r["processes"] == 1 for r in rows)
    assert validate(__import__("tomllib").loads((run / "config.toml").read_text())).train.steps == 4
    assert json.loads((run / "run.json").read_text())["example_shape"] == [1, 8, 8]
    state = torch.load(run / "checkpoints" / "step_00000004" / "state.pt", weights_only=True)
    assert state["step"] == 4 and state["batch"] == 4  # 24 examples / batch 4 = 6 batches an epoch


def test_resume_is_bit_exact(tiny, tmp_path):
    straight = train(tiny(run={"dir": str(tmp_path / "straight")}, train={"steps": 8, "grad_accum": 2}))
    half = tiny(run={"dir": str(tmp_path / "halves")}, train={"steps": 4, "grad_accum": 2})
    train(half)
    half["train"]["steps"] = 8
    resumed = train(half, resume=True)
    # 8 steps × 2 micro-batches cross an epoch boundary (6 batches an epoch) during the second half.
    for name in ("model", "ema"):
        a, b = weights(straight, 8, name), weights(resumed, 8, name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} weights differ after resume"
    c = torch.load(straight / "checkpoints/step_00000008/state.pt", weights_only=True)
    d = torch.load(resumed / "checkpoints/step_00000008/state.pt", weights_only=True)
    assert torch.equal(c["rng"]["torch"], d["rng"]["torch"])


def test_resume_refuses_a_changed_config_and_a_fresh_run_refuses_an_old_directory(tiny):
    raw = tiny(train={"steps": 2})
    train(raw)
    with pytest.raises(TrainingError, match="already holds checkpoints; pass --resume"):
        train(raw)
    raw["train"]["lr"] = 0.5
    with pytest.raises(ConfigError, match="differs .* at train.lr"):
        train(raw, resume=True)


def test_nonfinite_loss_stops_before_the_optimizer_moves(tiny, monkeypatch):
    raw = tiny(train={"steps": 3, "checkpoint_every": 1})
    trainer = Trainer(validate(raw), progress=False)
    calls = {"n": 0}
    original = type(trainer)._train_step

    def poisoned(self, stream, step):
        calls["n"] += 1
        if calls["n"] == 2:  # poison the second step's network
            with torch.no_grad():
                next(self.diffusion.model.parameters()).fill_(float("nan"))
        return original(self, stream, step)

    monkeypatch.setattr(type(trainer), "_train_step", poisoned)
    with pytest.raises(TrainingError, match="non-finite loss at step 2.*step_00000001"):
        trainer.run()
    saved = weights(Path(raw["run"]["dir"]), 1)
    assert all(torch.isfinite(v).all() for v in saved.values())
    assert len(list_checkpoints(Path(raw["run"]["dir"]) / "checkpoints")) == 1


def test_bf16_autocast_trains_on_the_cpu(tiny):
    run = train(tiny(train={"steps": 2, "precision": "bf16"}))
    assert all(v.dtype == torch.float32 for v in weights(run, 2).values())


def test_fp16_on_the_cpu_is_a_clear_error(tiny):
    with pytest.raises(ConfigError, match="train.precision: 'fp16' needs CUDA"):
        train(tiny(train={"precision": "fp16"}))


def test_init_from_starts_from_another_runs_weights(tiny, tmp_path):
    first = train(tiny(run={"dir": str(tmp_path / "a")}, train={"steps": 2}))
    second = Trainer(validate(tiny(run={"dir": str(tmp_path / "b")}, train={"steps": 1, "init_from": str(first)})),
                     progress=False)
    second._setup()
    ema = weights(first, 2, "ema")
    state = second.diffusion.state_dict()
    assert all(torch.equal(state[k], ema[k]) for k in ema)
    second.run_dir.release()


def _torchrun(config_file, cwd, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "diffkit.cli", "train", str(config_file), "--no-progress", *extra],
        capture_output=True, text=True, timeout=300, env=env, cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def flipped_pngs(tmp_path, num):
    """The [data] and [model] sections of a tiny run on ``num`` exported PNGs, read with random left-right flips."""
    from diffkit.cli import main

    folder = tmp_path / "pngs"
    assert main(["export-demo", "shapes", str(folder), "--num", str(num)]) == 0
    return {"data": {"dataset": "image_folder", "batch_size": 4,
                     "options": {"root": str(folder), "size": 8, "channels": 3, "flip": True}},
            "model": {"options": {"in_channels": 3, "channels": [8, 16], "num_res_blocks": 1, "attention_levels": []}}}


def test_the_workers_change_nothing_and_a_resume_mid_epoch_with_workers_is_bit_exact(tiny, tmp_path):
    """Each example is loaded under its own seed (run seed, epoch, index), whichever process loads it: the random
    flips of 0 and 2 workers are the same, and so is a resume mid-epoch with another number of workers."""
    setup = flipped_pngs(tmp_path, 12)  # 3 batches an epoch: step 4 is the first batch of the second epoch
    straight = train(tiny(run={"dir": str(tmp_path / "straight")}, train={"steps": 8}, **setup))
    setup["data"]["num_workers"] = 2
    half = tiny(run={"dir": str(tmp_path / "halves")}, train={"steps": 4}, **setup)
    train(half)
    half["train"]["steps"], half["data"]["num_workers"] = 8, 1  # num_workers may change on resume
    resumed = train(half, resume=True)
    for name in ("model", "ema"):
        a, b = weights(straight, 8, name), weights(resumed, 8, name)
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} weights differ after a resume with workers"
    setup["data"]["num_workers"] = 0  # the flips matter: without them the run trains otherwise
    setup["data"]["options"]["flip"] = False
    unflipped = weights(train(tiny(run={"dir": str(tmp_path / "no-flips")}, train={"steps": 8}, **setup)), 8)
    a = weights(straight, 8)
    assert not all(torch.equal(a[k], unflipped[k]) for k in a)


def test_each_example_is_loaded_under_its_own_seed_and_torchs_generator_is_put_back(tmp_path):
    from diffkit.data import create_dataset
    from diffkit.trainer import SeededExamples

    flipped = create_dataset("image_folder", **flipped_pngs(tmp_path, 4)["data"]["options"])
    before = torch.get_rng_state()
    epochs = [SeededExamples(flipped, 0, epoch) for epoch in range(12)]
    first = [e[0][0] for e in epochs]
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a, b) for a, b in zip(first, [e[0][0] for e in epochs]))  # the same example, again
    mirrored = [torch.equal(x, first[0].flip(-1)) for x in first]
    assert any(mirrored) and not all(mirrored)  # the flip is drawn per epoch, 1/2 each: 2^-11 to fail by chance
    assert all(torch.equal(x, first[0]) or m for x, m in zip(first, mirrored))


def test_torchrun_trains_with_ddp_and_resumes_bit_exact(tiny, tmp_path):
    """Two processes (gloo DDP), N steps in one go against N/2 + --resume + N/2: every rank's random state is saved;
    the resume lands mid-epoch and its loader workers flip the images as one process without workers does."""
    setup = flipped_pngs(tmp_path, 20)  # 10 examples a process: 2 batches an epoch
    straight = tiny(run={"dir": str(tmp_path / "straight")}, train={"steps": 6}, **setup)
    setup["data"]["num_workers"] = 1
    halves = tiny(run={"dir": str(tmp_path / "halves")}, train={"steps": 3}, **setup)
    (tmp_path / "straight.toml").write_text(tomli_w.dumps(straight))
    (tmp_path / "halves.toml").write_text(tomli_w.dumps(halves))
    _torchrun(tmp_path / "straight.toml", tmp_path)
    a_run, b_run = Path(straight["run"]["dir"]), Path(halves["run"]["dir"])
    rows = [json.loads(line) for line in (a_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))  # written by rank 0 alone
    assert all(r["processes"] == 2 for r in rows)
    assert [p.name for p in list_checkpoints(a_run / "checkpoints")] == ["step_00000006"]

    _torchrun(tmp_path / "halves.toml", tmp_path)
    with pytest.raises(TrainingError, match="written by 2 process\\(es\\), this run has 1"):
        train({**halves, "train": {**halves["train"], "steps": 6}}, resume=True)  # one process cannot continue it
    _torchrun(tmp_path / "halves.toml", tmp_path, "--set", "train.steps=6", "--resume")
    for name in ("model", "ema"):
        a, b = weights(a_run, 6, name), weights(b_run, 6, name)
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} weights differ after a torchrun resume"
    state = torch.load(b_run / "checkpoints/step_00000006/state.pt", weights_only=True)
    assert state["processes"] == 2 and len(state["rng_per_rank"]) == 2
    assert not torch.equal(state["rng_per_rank"][0]["torch"], state["rng_per_rank"][1]["torch"])


def test_cosine_lr_decay_after_warmup_logs_the_closed_form(tiny):
    import math

    run = train(tiny(train={"steps": 6, "lr": 1e-3, "warmup_steps": 2, "lr_decay": "cosine", "ema_warmup": True}))
    lrs = [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    # warm-up 1/2, 2/2 of lr; then half a cosine over the remaining 4 steps: progress 0, 1/4, 2/4, 3/4
    expected = [5e-4, 1e-3] + [1e-3 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert lrs == pytest.approx(expected, rel=1e-9)


# --- resume from the outside (audit) -------------------------------------------------------------------------


def test_resume_with_clipping_off_stays_off_and_is_exact(tiny, tmp_path):
    """grad_clip = None (Python) or 0 (TOML) is no clipping, also after the config goes through config.toml."""
    clip_off = {"steps": 8, "grad_clip": None, "lr": 0.05}
    straight = train(tiny(run={"dir": str(tmp_path / "straight")}, train=clip_off))
    half = tiny(run={"dir": str(tmp_path / "halves")}, train={**clip_off, "steps": 4})
    train(half)
    saved = validate(__import__("tomllib").loads((tmp_path / "halves" / "config.toml").read_text()))
    assert saved.train.grad_clip == 0
    half["train"]["steps"] = 8
    resumed = train(half, resume=True)
    a, b = weights(straight, 8), weights(resumed, 8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    clipped = train(tiny(run={"dir": str(tmp_path / "clipped")}, train={**clip_off, "grad_clip": 1e-3}))
    assert not all(torch.equal(a[k], weights(clipped, 8)[k]) for k in a)  # clipping does change this run


def test_resume_updates_config_toml_and_says_when_a_cosine_schedule_is_stretched(tiny, tmp_path, capsys):
    import diffkit

    raw = tiny(train={"steps": 4, "lr_decay": "cosine"})
    run = train(raw)
    raw["train"]["steps"] = 8
    capsys.readouterr()
    train(raw, resume=True)
    out = capsys.readouterr().out
    assert 'lr_decay = "cosine" now decays to 0 at step 8, not 4' in out and "will differ" in out
    assert diffkit.open_run(run).config.train.steps == 8  # what a later resume() or sample reads
    with pytest.raises(TrainingError, match="already trained 8 steps and train.steps is 8"):
        diffkit.open_run(run).resume()
    raw["train"]["steps"] = 10
    raw["train"]["lr_decay"] = "constant"
    with pytest.raises(ConfigError, match="train.lr_decay"):
        train(raw, resume=True)


def test_a_signal_on_the_last_step_does_not_ask_for_a_resume(tiny, monkeypatch):
    import signal

    from diffkit.trainer import TrainingStopped

    monkeypatch.setattr(Trainer, "_stop_now", lambda self, stop: signal.SIGTERM)  # the signal came during step 1
    with pytest.raises(TrainingStopped) as info:
        train(tiny(train={"steps": 1}))
    message = str(info.value)
    assert "after the last step 1" in message and "step_00000001" in message and "diffkit sample" in message
    assert "--resume" not in message


def test_a_failed_start_leaves_no_folder_it_made(tiny, tmp_path):
    raw = tiny(run={"dir": str(tmp_path / "a" / "b" / "run")}, train={"init_from": str(tmp_path / "missing")})
    with pytest.raises(Exception, match="missing"):
        train(raw)
    assert not (tmp_path / "a").exists()
