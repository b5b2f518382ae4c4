"""Hostile input and failure: nothing lost, nothing executed, every error clear (issue 7)."""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import diffkit
from diffkit import checkpoint as ckpt
from diffkit.config import ConfigError, apply_overrides, validate
from diffkit.run import Run, RunError
from diffkit.trainer import Trainer, TrainingError


class Payload:
    """Unpickling this would create a file: the proof that a loader ran code from a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(2), "payload": Payload(marker)}, path)
    return path, marker


# --- 1. no code from files -----------------------------------------------------------------------


def test_pickle_payloads_are_refused_by_every_loader(evil, tmp_path, tiny):
    path, marker = evil
    with pytest.raises(ckpt.CheckpointError, match="evil.pt' is a pickle"):
        ckpt.load_weights(path)
    with pytest.raises(ckpt.CheckpointError, match="evil.pt' holds pickled code or objects") as info:
        ckpt.load_state(path)
    assert "weights_only=False" not in str(info.value)  # no advice to run the file's code
    renamed = tmp_path / "evil.ckpt"
    shutil.copy(path, renamed)
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load_weights(renamed)

    # A run whose state.pt was swapped for the payload: --resume refuses it.
    run = Trainer(validate(tiny(train={"steps": 1})), progress=False).run()
    folder = ckpt.latest_checkpoint(run / "checkpoints")
    shutil.copy(path, folder / "state.pt")
    raw = tiny(train={"steps": 2})
    with pytest.raises(ckpt.CheckpointError, match="state.pt' holds pickled code or objects"):
        Trainer(validate(raw), resume=True, progress=False).run()
    # And a model.safetensors that is really a pickle, through `diffkit sample`.
    shutil.copy(path, folder / "ema.safetensors")
    from diffkit.cli import main

    assert main(["sample", str(run), "--no-progress"]) == 2
    assert not marker.exists()


def test_safetensors_round_trip_is_bit_exact(tmp_path):
    tensors = {"f32": torch.randn(3, 4), "f64": torch.randn(5, dtype=torch.float64),
               "bf16": torch.randn(7).to(torch.bfloat16), "i64": torch.arange(6)}
    ckpt.save_weights(tensors, tmp_path / "w.safetensors")
    back = ckpt.load_weights(tmp_path / "w.safetensors")
    assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in tensors.items())


def _bad_files(tmp_path):
    good = tmp_path / "good.safetensors"
    ckpt.save_weights({"w": torch.randn(64)}, good)
    data = good.read_bytes()
    cases = {
        "empty.safetensors": (b"", "empty or truncated"),
        "truncated.safetensors": (data[: len(data) // 2], "not a valid safetensors"),
        "huge-header.safetensors": (struct.pack("<Q", 2**40) + b"{}", "not a valid safetensors"),
        "lfs.safetensors": (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "git-lfs pointer"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        yield tmp_path / name, message


def test_bad_weight_files_fail_naming_the_file_and_the_problem(tmp_path):
    for path, message in _bad_files(tmp_path):
        with pytest.raises(ckpt.CheckpointError) as info:
            ckpt.load_weights(path)
        assert path.name in str(info.value) and message in str(info.value), str(info.value)
        assert "\n" not in str(info.value)


def test_weights_of_the_wrong_shape_are_named(tmp_path):
    ckpt.save_weights({"weight": torch.zeros(3, 2), "bias": torch.zeros(3)}, tmp_path / "w.safetensors")
    with pytest.raises(ckpt.CheckpointError, match=r"w.safetensors' does not fit this model: 1 tensor\(s\) of the "
                                                   r"wrong shape \(file vs model\), first weight \(3, 2\) vs \(3, 4\)"):
        ckpt.load_into(torch.nn.Linear(4, 3), tmp_path / "w.safetensors")


# --- 2. killed mid-write -------------------------------------------------------------------------

CHILD = """
import json, sys, time
import diffkit.checkpoint as ck
from diffkit.config import validate
from diffkit.trainer import Trainer

real = ck._fsync
def slow_fsync(path):
    # A slow disk: stall inside the third checkpoint's write, after its files exist under the temporary name.
    if ".tmp-step_00000003" in str(path):
        print("SAVING", flush=True)
        time.sleep(600)
    real(path)
ck._fsync = slow_fsync
Trainer(validate(json.loads(sys.argv[1])), progress=False).run()
"""


def test_sigkill_while_saving_leaves_the_previous_checkpoint_and_resume_works(tmp_path, tiny):
    raw = tiny(train={"steps": 5, "checkpoint_every": 1, "keep_checkpoints": 5})
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), json.dumps(raw)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "SAVING"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    root = Path(raw["run"]["dir"]) / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_00000001", "step_00000002"]
    assert any(p.name.startswith(".tmp-step_00000003") for p in root.iterdir())  # partial, never under a final name
    for name in ("model", "ema"):
        ckpt.load_weights(root / "step_00000002" / f"{name}.safetensors")
    assert ckpt.load_state(root / "step_00000002" / "state.pt")["step"] == 2

    Trainer(validate(raw), resume=True, progress=False).run()
    assert [p.name for p in ckpt.list_checkpoints(root)][-1] == "step_00000005"
    assert not any(p.name.startswith(".tmp-") for p in root.iterdir())


def test_a_checkpoint_caught_mid_swap_is_restored(tmp_path):
    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(root, 4, {"model": {"w": torch.ones(2)}, "ema": {"w": torch.ones(2)}}, {"step": 4}, keep=3)
    os.rename(root / "step_00000004", root / ".old-step_00000004-999")  # killed between the two renames
    assert ckpt.recover(root) == ["restored step_00000004"]
    assert ckpt.load_state(root / "step_00000004" / "state.pt")["step"] == 4


# --- 3. disk trouble -----------------------------------------------------------------------------


def _half_writes(monkeypatch, only: str = ""):
    """Every text write (of a file whose name ends with ``only``) stops half-way with a full disk: what a
    crash or ENOSPC mid-write leaves."""
    write_text = Path.write_text

    def half(self, data, *args, **kwargs):
        if not self.name.endswith(only):
            return write_text(self, data, *args, **kwargs)
        with open(self, "w", encoding="utf-8") as f:
            f.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half)


def test_config_and_run_json_are_written_whole_or_not_at_all(tmp_path, tiny, monkeypatch):
    raw = tiny(train={"steps": 1})
    _half_writes(monkeypatch)
    with pytest.raises(Exception):
        Trainer(validate(raw), progress=False).run()
    run = Path(raw["run"]["dir"])  # removed again when nothing but its lock was left in it
    for name in ("config.toml", "run.json"):
        assert not (run / name).exists(), f"a partial {name} was left"
    assert not run.exists() or not any(p.name.startswith(".tmp-") for p in run.iterdir())


def test_eval_json_is_replaced_whole_or_kept(tmp_path, tiny, monkeypatch):
    raw = tiny(train={"steps": 1})
    run = Trainer(validate(raw), progress=False).run()
    first = run.evaluate(examples=2, samples=2, timesteps=2)
    before = run.eval_path.read_text()
    _half_writes(monkeypatch, only="eval.json")
    with pytest.raises(OSError):
        run.evaluate(examples=2, samples=2, timesteps=2, seed=1)
    assert run.eval_path.read_text() == before and json.loads(before)["bits_per_dim"] == first["bits_per_dim"]


def test_eval_into_an_unwritable_run_is_refused_before_the_work(tmp_path, tiny, monkeypatch):
    raw = tiny(train={"steps": 1})
    run = Trainer(validate(raw), progress=False).run()
    monkeypatch.setattr(diffkit.GaussianDiffusion, "nll", lambda *a, **k: pytest.fail("evaluated before the check"))
    _half_writes(monkeypatch, only=".write-test")  # the run directory refuses files
    with pytest.raises(ConfigError, match="eval: cannot write eval.json into .*No space left on device"):
        run.evaluate(examples=2, samples=2, timesteps=2)


def test_an_unwritable_run_directory_fails_at_start(tmp_path, tiny):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RunError, match="run directory '.*file/run' is not writable"):
        Trainer(validate(tiny(run={"dir": str(blocker / "run")})), progress=False).run()


def test_too_little_free_space_fails_at_start(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(TrainingError, match=r"has 0.0 MiB free; keeping 3 checkpoints of about .* MiB \(and writing one more\) needs about"):
        Trainer(validate(tiny()), progress=False).run()


def test_a_full_disk_at_save_is_clear_and_keeps_earlier_checkpoints(tmp_path, tiny, monkeypatch):
    raw = tiny(train={"steps": 3, "checkpoint_every": 1})
    real = ckpt.save_weights
    calls = {"n": 0}

    def full_disk(tensors, path):
        calls["n"] += 1
        if calls["n"] > 4:  # two checkpoints (model + ema each) fit, then the disk is full
            raise OSError(28, "No space left on device")
        real(tensors, path)

    monkeypatch.setattr(ckpt, "save_weights", full_disk)
    with pytest.raises(TrainingError, match=r"could not write checkpoint step_00000003 .*No space left on device.*; a checkpoint needs about .* MiB and .* free; the previous checkpoints are intact"):
        Trainer(validate(raw), progress=False).run()
    root = Path(raw["run"]["dir"]) / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_00000001", "step_00000002"]
    assert not any(p.name.startswith(".tmp-") for p in root.iterdir())


# --- 4. config fuzzing ---------------------------------------------------------------------------

KEYS = ["run", "data", "model", "diffusion", "train", "sample", "dir", "seed", "dataset", "options", "backbone",
        "steps", "lr", "batch_size", "schedule", "objective", "sampler", "labels", "conditioner", "name", "precision"]
values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8),
                                                                      children, max_size=4),
    max_leaves=12,
)


def _clean(error):
    message = str(error)
    assert "\n" not in message
    assert "key '" in message or "missing required key" in message
    assert "Traceback" not in message


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), values, max_size=6))
def test_random_configs_are_valid_or_one_clean_error(raw):
    try:
        validate(raw)
    except ConfigError as error:
        _clean(error)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3),
                          st.text(alphabet="0123456789.-e[]\"' ,abtrufs", max_size=10)), max_size=4))
def test_random_overrides_are_valid_or_one_clean_error(sets):
    raw = {"data": {"dataset": "shapes"}, "model": {"backbone": "unet2d"}}
    try:
        validate(apply_overrides(raw, [".".join(path) + "=" + value for path, value in sets]))
    except ConfigError as error:
        message = str(error)
        assert "\n" not in message
        assert "key '" in message or "missing required key" in message or "--set" in message


# --- 5. plugin failures --------------------------------------------------------------------------


def test_plugins_that_return_garbage_are_named_and_the_rest_load(installed):
    installed("garbage-dist", "garbage_plugin", """
        import diffkit

        @diffkit.hookimpl
        def diffkit_register_backbones(register):
            register("junk", 42)
    """)
    installed("notmodule-dist", "notmodule_plugin", """
        import diffkit

        @diffkit.hookimpl
        def diffkit_register_backbones(register):
            register("notmodule", lambda **kw: "a string")
    """)
    with pytest.warns(RuntimeWarning, match="garbage-dist.*not callable"):
        registry = diffkit.reload_plugins()
    assert "junk" not in registry.backbones and "unet2d" in registry.backbones
    with pytest.raises(diffkit.PluginError, match=r"backbone 'notmodule' \(from notmodule-dist\) returned a str"):
        diffkit.create_backbone("notmodule")


def test_a_backbone_returning_the_wrong_shape_is_named_with_its_distribution(installed):
    installed("shrinking-dist", "shrinking_plugin", """
        import torch.nn as nn
        import diffkit

        class Shrink(nn.Module):
            def forward(self, x, t, cond=None):
                return x[..., :-1]

        @diffkit.hookimpl
        def diffkit_register_backbones(register):
            register("shrink", Shrink)
    """)
    diffkit.reload_plugins()
    model = diffkit.create_backbone("shrink")
    d = diffkit.GaussianDiffusion(model, (1, 8), diffkit.schedules.linear_beta_schedule(50))
    with pytest.raises(RuntimeError, match=r"backbone 'shrink' \(from shrinking-dist\) returned shape \(2, 1, 7\)"):
        d(torch.zeros(2, 1, 8))


# --- 6. numerical failure ------------------------------------------------------------------------


def test_a_nan_batch_is_skipped_before_the_optimizer_and_ema_move(tiny):
    trainer = Trainer(validate(tiny(train={"on_nonfinite": "skip", "ema_start": 0})), progress=False)
    trainer._setup()
    before = {k: v.clone() for k, v in trainer.diffusion.state_dict().items()}
    ema_before = {k: v.clone() for k, v in trainer.ema.model.state_dict().items()}
    x = torch.zeros(4, 1, 8, 8)
    x[1, 0, 3, 3] = float("nan")
    stream = iter([(None, (x, torch.zeros(4, dtype=torch.long)))])
    with pytest.warns(RuntimeWarning, match="non-finite loss at step 1.*batch skipped \\(1 so far\\)"):
        loss, _, _ = trainer._train_step(stream, 0)
    assert loss is None
    assert all(torch.equal(before[k], v) for k, v in trainer.diffusion.state_dict().items())
    assert all(torch.equal(ema_before[k], v) for k, v in trainer.ema.model.state_dict().items())
    assert trainer.ema.num_updates == 0 and not trainer.optimizer.state
    trainer.run_dir.release()


def test_nothing_non_finite_is_ever_written(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="tensor 'w' holds NaN or Inf"):
        ckpt.save_checkpoint(tmp_path, 1, {"model": {"w": torch.tensor([1.0, float("inf")])}}, {}, keep=1)
    assert ckpt.list_checkpoints(tmp_path) == [] and not list(tmp_path.iterdir())


# --- 7. two runs, one directory ------------------------------------------------------------------


def test_a_second_run_into_a_directory_in_use_is_refused(tiny):
    raw = tiny()
    holder = Run(raw["run"]["dir"])
    holder.create()
    try:
        with pytest.raises(RunError, match="is in use by another diffkit run"):
            Trainer(validate(raw), progress=False).run()
    finally:
        holder.release()
    Trainer(validate(raw), progress=False).run()  # free again once the first run ends


# --- weights that are silently wrong ---------------------------------------------------------------


@pytest.mark.parametrize("bad, message", [
    ("int32", r"tensor\(s\) of the wrong dtype, first '.*' is int32, the model's is float32"),
    ("bfloat16", r"tensor\(s\) of the wrong dtype, first '.*' is bfloat16, the model's is float32"),
    ("nan", r"tensor '.*' holds NaN or Inf; these weights cannot be used"),
])
def test_weights_of_another_dtype_or_holding_nan_are_refused_naming_file_and_tensor(tmp_path, tiny, bad, message):
    from diffkit.cli import main

    run = Trainer(validate(tiny(train={"steps": 1})), progress=False).run()
    folder = ckpt.latest_checkpoint(run / "checkpoints")
    weights = ckpt.load_weights(folder / "ema.safetensors")
    name = sorted(weights)[0]
    if bad == "nan":
        weights[name] = weights[name].clone().fill_(float("nan"))
        from safetensors.torch import save_file  # save_weights itself refuses NaN: write it around it

        save_file(weights, str(folder / "ema.safetensors"))
    else:
        ckpt.save_weights({k: v.to(getattr(torch, bad)) for k, v in weights.items()}, folder / "ema.safetensors")
    with pytest.raises(ckpt.CheckpointError, match=f"ema.safetensors'.*{message}"):
        diffkit.open_run(run).diffusion()
    assert main(["sample", str(run), "--num", "1", "--no-progress"]) == 2  # `diffkit sample` says so, writes nothing
    assert not list((run / "samples").glob("step_*/000000.png"))


# --- a crash in the middle of pruning ------------------------------------------------------------


def test_an_incomplete_checkpoint_under_a_final_name_is_never_loaded_and_resume_tidies_it(tmp_path, tiny):
    from diffkit.cli import main

    raw = tiny(train={"steps": 2, "checkpoint_every": 1, "keep_checkpoints": 2})
    run = Trainer(validate(raw), progress=False).run()
    newest = run / "checkpoints" / "step_00000002"
    (newest / "model.safetensors").unlink()  # what an older, non-atomic prune left when killed
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step_00000001"]
    with pytest.raises(ckpt.CheckpointError, match="step_00000002' is incomplete \\(missing model.safetensors\\)"):
        ckpt.resolve_checkpoint(newest)
    assert main(["sample", str(run), "--checkpoint", str(newest), "--num", "1", "--no-progress"]) == 2
    raw["train"]["steps"] = 3
    Trainer(validate(raw), resume=True, progress=False).run()  # resumes from step 1, sets the partial one aside
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == [".incomplete-step_00000002", "step_00000002", "step_00000003"]
    assert ckpt.load_state(run / "checkpoints" / "step_00000002" / "state.pt")["step"] == 2


def test_metrics_rows_after_the_checkpoint_are_dropped_on_resume(tmp_path, tiny):
    raw = tiny(train={"steps": 4, "checkpoint_every": 2, "log_every": 1})
    run = Trainer(validate(raw), progress=False).run()
    # A crash after step 3 was logged but before step 4's checkpoint: the run resumes from step 2.
    shutil.rmtree(run / "checkpoints" / "step_00000004")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 0.5')  # and a line cut by the crash
    raw["train"]["steps"] = 5
    Trainer(validate(raw), resume=True, progress=False).run()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
