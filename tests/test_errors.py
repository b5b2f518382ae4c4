"""Every mistake gets one line, before any work is lost (issue 12): each input that used to end in a
traceback, a hang, a silent fallback or a crash after training, through the command line as a user types it."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w
import torch

from diffkit import checkpoint as ckpt
from diffkit.cli import main
from diffkit.config import validate
from diffkit.trainer import MAX_CONSECUTIVE_SKIPS, Trainer


def one_line_error(capsys, argv, expected, code=2):
    """Run the CLI: a non-zero exit and exactly one line on stderr, naming what is wrong."""
    capsys.readouterr()
    assert main(argv) == code, argv
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert expected in err, err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run (unconditional, T = 50) shared by the sample and eval cases."""
    from tiny_runs import tiny_config

    root = tmp_path_factory.mktemp("trained")
    raw = tiny_config(root, train={"steps": 2})
    Trainer(validate(raw), progress=False).run()
    return Path(raw["run"]["dir"])


def write_config(tmp_path, raw, name="c.toml"):
    path = tmp_path / name
    path.write_text(tomli_w.dumps(raw))
    return str(path)


# --- the command line's own arguments ------------------------------------------------------------

SAMPLE_CASES = [
    (["--num", "-3"], "argument -n/--num: expected a positive integer up to 1,000,000,000, got -3"),
    (["--num", "0"], "argument -n/--num: expected a positive integer up to 1,000,000,000, got 0"),
    (["--steps", "0"], "argument --steps: expected a positive integer up to 1,000,000,000, got 0"),
    (["--labels", "a,b"], "argument --labels: expected comma-separated class indices"),
    (["--labels", "1,,2"], "argument --labels: expected comma-separated class indices"),
    (["--labels", "1,2"], "sample.labels: this model has no conditioner"),
    (["--guidance", "nan"], "argument --guidance: expected a finite number, got 'nan'"),
    (["--eta", "nan"], "argument --eta: expected a finite number, got 'nan'"),
    (["--guidance", "2"], "guidance_scale != 1 needs a conditioner"),
    (["--steps", "100"], "steps must be between 1 and the schedule's T=50, got 100"),
    (["--sampler", "euler"], "unknown sampler 'euler'"),
    (["--checkpoint", "/nonexistent/ckpt"], "checkpoint or run '/nonexistent/ckpt' not found"),
    (["--checkpoint", "7"], "step_00000007' not found"),
    (["--seed", "-1"], "argument --seed: expected an integer in 0…4294967295"),
]


@pytest.mark.parametrize("extra, expected", SAMPLE_CASES)
def test_sample_argument_mistakes(trained, tmp_path, capsys, extra, expected):
    one_line_error(capsys, ["sample", str(trained), "--out", str(tmp_path / "o"), "--no-progress", *extra], expected)


def test_sample_refuses_an_out_that_is_a_file_or_another_calls_folder(trained, tmp_path, capsys):
    blocker = tmp_path / "file.png"
    blocker.write_bytes(b"x")
    one_line_error(capsys, ["sample", str(trained), "--out", str(blocker), "--no-progress"], "is a file")
    out = tmp_path / "calls"
    assert main(["sample", str(trained), "--num", "2", "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    one_line_error(capsys, ["sample", str(trained), "--num", "2", "--steps", "3", "--out", str(out), "--no-progress"],
                   "holds samples made with other settings")


def test_sample_without_a_gpu_asking_for_cuda(trained, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    one_line_error(capsys, ["sample", str(trained), "--device", "cuda", "--no-progress"],
                   "'cuda' was asked for but no CUDA device is available")


@pytest.mark.parametrize("extra, expected", [
    (["--examples", "0"], "argument --examples: expected a positive integer up to 1,000,000,000, got 0"),
    (["--examples", "-1"], "argument --examples: expected a positive integer up to 1,000,000,000, got -1"),
    (["--samples", "0"], "argument --samples: expected a positive integer up to 1,000,000,000, got 0"),
    (["--timesteps", "-3"], "expected 0 (all T) or a positive number of terms, got -3"),
    (["--timesteps", "100000"], "timesteps: the bound has 50 terms (the schedule's T); got 100000"),
])
def test_eval_argument_mistakes(trained, capsys, extra, expected):
    one_line_error(capsys, ["eval", str(trained), "--no-progress", *extra], expected)


def test_export_demo_argument_mistakes(tmp_path, capsys):
    one_line_error(capsys, ["export-demo", "shapes", str(tmp_path / "d"), "--num", "-5"],
                   "argument --num: expected a positive integer up to 1,000,000,000, got -5")
    one_line_error(capsys, ["export-demo", "planets", str(tmp_path / "d")], "unknown demo set 'planets'")


# --- config values, all caught before step 1 -------------------------------------------------------

CONFIG_CASES = [
    ({"run": {"seed": 9223372036854775807}}, "key 'run.seed': Input should be less than or equal to 4294967295"),
    ({"run": {"dir": ""}}, "key 'run.dir': String should have at least 1 character"),
    ({"train": {"init_from": ""}}, "key 'train.init_from': String should have at least 1 character"),
    ({"data": {"num_workers": 100000}}, "key 'data.num_workers': Input should be less than or equal to"),
    ({"diffusion": {"timesteps": 2}}, "diffusion.timesteps: linear_beta_schedule: T=2"),
    ({"model": {"options": {"in_channels": 5}}}, "set model.options.in_channels = 1"),
    ({"data": {"options": {"size": "big"}}}, "data.options.size: dataset 'shapes': option 'size' expects an integer, got 'big'"),
    ({"data": {"options": {"size": 8.5}}}, "data.options.size: dataset 'shapes': option 'size' expects an integer, got 8.5"),
    ({"data": {"options": {"channels": True}}}, "data.options.channels: dataset 'shapes': option 'channels' expects an integer, got True"),
    ({"data": {"options": {"colour": 1}}}, "data.options: dataset 'shapes': unknown option(s) ['colour']"),
    ({"model": {"options": {"channels": "abc"}}}, "model.options:"),
    ({"sample": {"steps": 100}}, "[sample]: steps must be between 1 and the schedule's T=50, got 100"),
    ({"sample": {"guidance_scale": 2.0}}, "[sample]: guidance_scale != 1 needs a conditioner"),
    ({"sample": {"labels": [0, 1]}}, "sample.labels: this model has no conditioner"),
]


@pytest.mark.parametrize("sections, expected", CONFIG_CASES)
def test_config_mistakes_stop_before_training_with_one_line(tmp_path, tiny, capsys, sections, expected):
    raw = tiny()
    for section, values in sections.items():
        if section == "model" and "options" in values:
            raw["model"]["options"].update(values["options"])
        elif section == "data" and "options" in values:
            raw["data"]["options"].update(values["options"])
        else:
            raw[section].update(values)
    one_line_error(capsys, ["train", write_config(tmp_path, raw), "--no-progress"], expected)
    run = Path(raw["run"]["dir"]) if raw["run"]["dir"] else None
    if run is not None:
        assert not (run / "checkpoints").exists()  # nothing trained...
        assert not run.exists() or any(p.name != ".lock" for p in run.iterdir())  # ...and no folder of a bare .lock


def test_conditional_sample_settings_are_checked_before_step_1(tmp_path, tiny, capsys):
    conditional = {"conditioner": {"name": "labels", "options": {"num_classes": 3, "dim": 8}}}
    raw = tiny(model=conditional, sample={"num": 2, "labels": [0, 7]})
    one_line_error(capsys, ["train", write_config(tmp_path, raw), "--no-progress"],
                   "sample.labels: 7 is not a class of this model (0…2)")
    raw = tiny(model=conditional, sample={"num": 3, "labels": [0, 1]})
    one_line_error(capsys, ["train", write_config(tmp_path, raw), "--no-progress"], "sample.labels: 2 labels for 3 samples")


def test_an_error_from_a_set_names_the_set_not_the_file(tmp_path, tiny, capsys):
    config = write_config(tmp_path, tiny())
    one_line_error(capsys, ["train", config, "--set", "train.lr=-1"], "--set train.lr=-1: key 'train.lr'")


def test_a_huge_learning_rate_stops_with_one_line(tmp_path, tiny, capsys):
    raw = tiny(train={"lr": 1e38})
    one_line_error(capsys, ["train", write_config(tmp_path, raw), "--no-progress"], "train.lr=1e+38")


def test_skipping_nonfinite_batches_is_bounded(tmp_path, tiny, capsys):
    raw = tiny(train={"lr": 1e30, "on_nonfinite": "skip", "steps": 1000})
    with pytest.warns(RuntimeWarning):
        err = one_line_error(capsys, ["train", write_config(tmp_path, raw), "--no-progress"],
                             f"{MAX_CONSECUTIVE_SKIPS} batches in a row were non-finite")
    assert "no checkpoint was written yet" in err or "the last good checkpoint" in err


# --- resuming --------------------------------------------------------------------------------------


def test_resume_mistakes_and_the_same_run_spelled_another_way(tmp_path, tiny, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = tiny(run={"dir": "runs/x"}, train={"steps": 2})
    config = write_config(tmp_path, raw)
    assert main(["train", config, "--no-progress"]) == 0
    one_line_error(capsys, ["train", config, "--resume", "--set", "train.steps=1"],
                   "has already trained 2 steps and train.steps is 1")
    # ./runs/x, an absolute path, and the run moved elsewhere: all the same run.
    assert main(["train", config, "--resume", "--set", "train.steps=3", "--set", "run.dir=./runs/x", "--no-progress"]) == 0
    assert main(["train", config, "--resume", "--set", "train.steps=4", "--set", f"run.dir={tmp_path / 'runs/x'}",
                 "--no-progress"]) == 0
    shutil.move(tmp_path / "runs/x", tmp_path / "moved")
    assert main(["train", config, "--resume", "--set", "train.steps=5", "--set", "run.dir=moved", "--no-progress"]) == 0
    assert ckpt.load_state(tmp_path / "moved/checkpoints/step_00000005/state.pt")["step"] == 5


@pytest.mark.parametrize("damage, expected", [
    ({}, "is not a diffkit training state: it lacks step, epoch, batch, optimizer, ema, rng"),
    ("no-rng", "it lacks rng"),
    ("other-optimizer", "the optimizer state belongs to another model"),
])
def test_a_damaged_state_file_is_one_line(tmp_path, tiny, capsys, damage, expected):
    raw = tiny(train={"steps": 1})
    config = write_config(tmp_path, raw)
    assert main(["train", config, "--no-progress"]) == 0
    path = Path(raw["run"]["dir"]) / "checkpoints/step_00000001/state.pt"
    state = torch.load(path, weights_only=True)
    if damage == "no-rng":
        del state["rng"]
    elif damage == "other-optimizer":
        other = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters())
        torch.nn.Linear(3, 2)(torch.zeros(1, 3)).sum().backward()
        state["optimizer"] = other.state_dict()
    else:
        state = damage
    torch.save(state, path)
    one_line_error(capsys, ["train", config, "--resume", "--set", "train.steps=2", "--no-progress"], expected)


# --- data and plugins --------------------------------------------------------------------------------


def test_a_data_file_that_turns_corrupt_mid_training_is_one_line(tmp_path, tiny, capsys, monkeypatch):
    assert main(["export-demo", "shapes", str(tmp_path / "pngs"), "--num", "12"]) == 0
    files = sorted((tmp_path / "pngs").rglob("*.png"))
    raw = tiny(data={"dataset": "image_folder", "batch_size": 4,
                     "options": {"root": str(tmp_path / "pngs"), "size": 16, "channels": 3, "cache_bytes": 0,
                                 "on_error": "skip"}},
               model={"options": {"in_channels": 3, "channels": [8, 16], "num_res_blocks": 1, "attention_levels": []}},
               train={"steps": 4})
    real_batches = __import__("diffkit.trainer", fromlist=["batches"]).batches

    def corrupting(*args, **kwargs):
        for i, item in enumerate(real_batches(*args, **kwargs)):
            if i == 1:  # after the first step, every file goes bad
                for f in files:
                    f.write_bytes(b"not a png any more")
            yield item
    monkeypatch.setattr("diffkit.trainer.batches", corrupting)
    one_line_error(capsys, ["train", write_config(tmp_path, raw), "--no-progress"], "data file became unreadable at step")


def test_a_plugin_backbone_returning_the_wrong_shape_is_one_line_naming_it(installed, tmp_path, tiny, capsys):
    installed("shrinking-dist", "shrinking_plugin", """
        import torch.nn as nn
        import diffkit

        class Shrink(nn.Module):
            def __init__(self, **options):
                super().__init__()
                self.w = nn.Parameter(nn.init.zeros_(__import__("torch").empty(1)))
            def forward(self, x, t, cond=None):
                return x[..., :-1] * self.w

        @diffkit.hookimpl
        def diffkit_register_backbones(register):
            register("shrink", Shrink)
    """)
    __import__("diffkit").reload_plugins()
    raw = tiny(model={"backbone": "shrink", "options": {}})
    one_line_error(capsys, ["train", write_config(tmp_path, raw), "--no-progress"],
                   "backbone 'shrink' (from shrinking-dist) returned shape (1, 1, 8, 7)")


# --- disk and signals ----------------------------------------------------------------------------


def test_a_full_disk_at_save_is_one_line_naming_the_run_and_the_space(tmp_path, tiny, capsys, monkeypatch):
    raw = tiny(train={"steps": 4, "checkpoint_every": 1})
    usage = shutil.disk_usage

    def shrinking(path):  # the disk fills up while the run trains: the third save no longer fits
        real = usage(path)
        saved = len(list((Path(raw["run"]["dir"]) / "checkpoints").glob("step_*")))
        free = 10**9 if saved < 2 else 100 * 1024
        return shutil._ntuple_diskusage(real.total, real.total - free, free)

    monkeypatch.setattr(shutil, "disk_usage", shrinking)
    err = one_line_error(capsys, ["train", write_config(tmp_path, raw), "--no-progress"],
                         "cannot write checkpoint step_00000003")
    assert "has 0.1 MiB free, a checkpoint needs about" in err and raw["run"]["dir"] in err
    assert [p.name for p in ckpt.list_checkpoints(Path(raw["run"]["dir"]) / "checkpoints")] == \
        ["step_00000001", "step_00000002"]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("basic_ios::clear: iostream error"),
                                   OSError(27, "File too large")])
def test_every_kind_of_write_failure_is_one_line(tmp_path, tiny, capsys, monkeypatch, error):
    raw = tiny(train={"steps": 2, "checkpoint_every": 1})

    def failing(*args, **kwargs):
        if "step_00000002" in str(args[1]):
            raise error
        return real(*args, **kwargs)

    real = torch.save
    monkeypatch.setattr(torch, "save", failing)
    err = one_line_error(capsys, ["train", write_config(tmp_path, raw), "--no-progress"],
                         "could not write checkpoint step_00000002")
    assert "the previous checkpoints are intact" in err
    assert [p.name for p in ckpt.list_checkpoints(Path(raw["run"]["dir"]) / "checkpoints")] == ["step_00000001"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_save_a_checkpoint_say_so_and_exit(tmp_path, tiny, signum):
    """What a cluster scheduler sends before it kills, and Ctrl-C: the work since the last interval is kept."""
    raw = tiny(train={"steps": 100000, "checkpoint_every": 0, "log_every": 1})
    config = write_config(tmp_path, raw)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "diffkit.cli", "train", config, "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    metrics = Path(raw["run"]["dir"]) / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.1)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    name = signal.Signals(signum).name
    assert err.strip().count("\n") == 0 and f"stopped by {name} after step" in err and "--resume" in err
    saved = ckpt.list_checkpoints(Path(raw["run"]["dir"]) / "checkpoints")
    assert len(saved) == 1 and ckpt.load_state(saved[0] / "state.pt")["step"] >= 3


def _worker_of_rank(agent_pid: int, rank: int) -> int:
    """The pid of torchrun's worker process with RANK=rank (a child of the agent), from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == agent_pid and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} under pid {agent_pid}")


def test_sigterm_to_one_torchrun_process_stops_every_process_at_one_step_and_resume_continues(tmp_path, tiny):
    """Under torchrun a scheduler may signal one process: all agree on the step, rank 0 saves it, and
    `--resume` under torchrun continues from it."""
    raw = tiny(train={"steps": 100000, "checkpoint_every": 0, "log_every": 1})
    config = write_config(tmp_path, raw)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "diffkit.cli", "train", config, "--no-progress"]
    agent = subprocess.Popen(torchrun, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    metrics = Path(raw["run"]["dir"]) / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.1)
    os.kill(_worker_of_rank(agent.pid, 1), signal.SIGTERM)  # rank 1 only: rank 0 learns it from the all-gather
    _, err = agent.communicate(timeout=180)
    assert agent.returncode != 0
    # The two ranks write to one stderr at once: their lines may run together, so count the messages.
    stops = re.findall(r"stopped by SIGTERM after step (\d+):", err)
    assert len(stops) == 2, err[-3000:]  # both ranks, the same step
    assert len(set(stops)) == 1, stops
    saved = ckpt.list_checkpoints(Path(raw["run"]["dir"]) / "checkpoints")
    assert len(saved) == 1
    step = ckpt.load_state(saved[0] / "state.pt")["step"]
    assert step >= 3 and stops[0] == str(step)
    done = subprocess.run(torchrun + ["--resume", "--set", f"train.steps={step + 2}"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    final = ckpt.list_checkpoints(Path(raw["run"]["dir"]) / "checkpoints")[-1]
    assert ckpt.load_state(final / "state.pt")["step"] == step + 2


@pytest.mark.parametrize("extra, named", [
    (["--box", "1,2"], "--box applies"),
    (["--gap", "0.1:0.2"], "--gap applies"),
    (["--extend", "3", "--reconstruction", "5"], "--extend and --reconstruction apply"),
    (["--resample", "3", "--jump-length", "2", "--overlap", "4"], "--resample and --jump-length and --overlap apply"),
])
def test_inpainting_options_without_input_are_refused_not_ignored(trained, capsys, extra, named):
    err = one_line_error(capsys, ["sample", str(trained), "--num", "1", "--no-progress", *extra], named)
    assert "add --input FILE" in err
