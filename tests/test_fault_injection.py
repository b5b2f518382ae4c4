"""Killed at every file-system call of a save, prune, metrics, samples and loss-plot cycle: after each kill
no final-named file or folder is partial, and the run resumes (issues 11 and 12).

A recording run lists the mutating file-system calls a tiny run makes after its first checkpoint (the
renames, unlinks, rmdirs, mkdirs, fsyncs, opens for writing, safetensors and torch.save writes). Then,
for each of them in turn, a forked process runs the same training and SIGKILLs itself exactly at that
call: a deterministic fault, not a lucky timer.
"""

import builtins
import json
import os
import signal
import sys
import tomllib

import pytest
import matplotlib.pyplot  # noqa: F401  (imported once here, so no forked child creates its caches)
import torch
from PIL import Image

from diffkit import checkpoint as ckpt
from diffkit.config import validate
from diffkit.trainer import Trainer

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

OS_CALLS = ("rename", "replace", "unlink", "rmdir", "mkdir", "fsync")


def _instrument(kill_at, log):
    """Count mutating file-system calls from the moment the first checkpoint exists; SIGKILL at ``kill_at``."""
    state = {"armed": False, "n": 0}

    def hit(what):
        if not state["armed"] or state.get("done"):
            return
        state["n"] += 1
        log.append(what)
        if state["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def wrap(name, fn, writes=lambda *a, **k: True):
        def inner(*args, **kwargs):
            if writes(*args, **kwargs):
                target = next((a for a in args if isinstance(a, (str, os.PathLike))), "")
                hit(f"{name} {os.path.basename(str(target))}")
            return fn(*args, **kwargs)
        return inner

    real_rename = os.rename
    for name in OS_CALLS:
        setattr(os, name, wrap(f"os.{name}", getattr(os, name)))
    writing = lambda file, mode="r", *a, **k: any(c in mode for c in "wax+")  # noqa: E731
    builtins.open = wrap("open", builtins.open, writing)
    ckpt.save_file = wrap("safetensors.save_file", ckpt.save_file)
    torch.save = wrap("torch.save", torch.save)

    def arm_after_first_checkpoint(src, dst, *args, **kwargs):
        real_rename(src, dst, *args, **kwargs)
        if str(dst).endswith("step_00000001"):
            state["armed"] = True
    os.rename = wrap("os.rename", arm_after_first_checkpoint)
    return state


def _run_child(raw, kill_at, log_path=None):
    """Fork; the child trains under instrumentation; returns how it ended (a signal number, or the exit code)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            torch.set_num_threads(1)
            sys.stdout = sys.stderr = open(os.devnull, "w")
            log = []
            state = _instrument(kill_at, log)
            Trainer(validate(raw), progress=False).run()
            state["done"] = True
            if log_path:
                with open(log_path, "w") as f:
                    json.dump(log, f)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _assert_nothing_partial(run):
    for folder in (run / "checkpoints").iterdir():
        if ckpt._STEP_DIR.match(folder.name):  # a final name: complete and loadable
            assert not ckpt.missing_files(folder), f"partial checkpoint {folder.name}"
            ckpt.load_weights(folder / "model.safetensors")
            ckpt.load_weights(folder / "ema.safetensors")
            ckpt.load_state(folder / "state.pt")
    for png in list((run / "samples").glob("*.png")) + [run / "loss.png"]:
        if png.exists() and not png.name.startswith("."):
            with Image.open(png) as img:
                img.load()
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line)
    tomllib.loads((run / "config.toml").read_text())
    json.loads((run / "run.json").read_text())


def test_a_kill_at_every_file_system_call_leaves_nothing_partial_and_the_run_resumes(tmp_path, tiny):
    def config(name, steps=2):
        return tiny(run={"dir": str(tmp_path / name)},
                    train={"steps": steps, "checkpoint_every": 1, "keep_checkpoints": 1, "log_every": 1})

    log_path = tmp_path / "calls.json"
    assert _run_child(config("record"), kill_at=None, log_path=log_path) == 0
    calls = json.loads(log_path.read_text())
    kinds = " ".join(calls)
    # The cycle covers the metrics row, the checkpoint save, the prune and the samples and loss plot.
    for needed in ("metrics.jsonl", "safetensors.save_file", "torch.save", "step_00000002", ".trash-step_00000001",
                   "os.unlink", "os.rmdir", "step_00000002.png", "loss.png", "os.fsync", "os.replace"):
        assert needed in kinds, f"the recorded cycle has no {needed}"
    assert len(calls) < 80

    for n in range(1, len(calls) + 1):
        name = f"kill{n}"
        assert _run_child(config(name), kill_at=n) == -signal.SIGKILL, f"call {n} ({calls[n - 1]}) was not reached"
        run = tmp_path / name
        _assert_nothing_partial(run)
        Trainer(validate(config(name, steps=3)), resume=True, progress=False).run()
        assert ckpt.load_state(run / "checkpoints" / "step_00000003" / "state.pt")["step"] == 3, calls[n - 1]
        leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
        assert leftovers == [], f"after a kill at {calls[n - 1]}: {leftovers} left behind"
