"""Property-based test of the command line (issue 12): hypothesis throws argument lists at `train`, `sample`,
`eval` and `export-demo` on a tiny run made here. Every outcome is success — with what was asked for on
disk — or a non-zero exit with one line on stderr: never a traceback, never a hang, never exit 0 with an
ignored value."""

import contextlib
import io
import signal
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffkit.cli import main
from diffkit.config import validate
from diffkit.trainer import Trainer

TIME_LIMIT = 60  # seconds: an invocation taking longer is a hang

numbers = st.sampled_from(["-5", "-1", "0", "1", "2", "3", "1e3", "abc", "", "nan", "inf", "2.5", "99999999999999999999"])
floats = st.sampled_from(["0", "1", "2.5", "-1", "nan", "inf", "-inf", "x", "1e400"])
labels = st.sampled_from(["0", "0,1", "a,b", "1,,2", "-1", "5", "0,0,0", ""])
samplers = st.sampled_from(["ddpm", "ddim", "dpm-solver++", "euler", ""])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two tiny trained runs (unconditional and conditional, T = 30) and a config file."""
    from tiny_runs import tiny_config

    root = tmp_path_factory.mktemp("fuzz")
    plain = tiny_config(root / "plain", train={"steps": 1}, diffusion={"timesteps": 30})
    Trainer(validate(plain), progress=False).run()
    cond = tiny_config(root / "cond", train={"steps": 1}, diffusion={"timesteps": 30},
                       model={"conditioner": {"name": "labels", "options": {"num_classes": 3, "dim": 8}}})
    Trainer(validate(cond), progress=False).run()
    config = root / "train.toml"
    config.write_text(tomli_w.dumps(tiny_config(root / "train", train={"steps": 1}, diffusion={"timesteps": 30})))
    return {"plain": Path(plain["run"]["dir"]), "cond": Path(cond["run"]["dir"]), "config": config, "root": root}


def _option(name, values):
    return st.one_of(st.just([]), values.map(lambda v: [name, v]))


def _sample_args(world):
    return st.tuples(
        st.sampled_from(["plain", "cond", "missing"]),
        _option("--num", numbers), _option("--steps", numbers), _option("--sampler", samplers),
        _option("--labels", labels), _option("--guidance", floats), _option("--eta", floats),
        _option("--seed", numbers), _option("--batch-size", numbers), _option("--checkpoint", st.sampled_from(["1", "9", "x"])),
        _option("--noise-gate", floats), _option("--churn", floats), _option("--churn-stop", numbers),
        st.sampled_from([[], ["--raw"]]),
    ).map(lambda a: ["sample", str(world[a[0]]) if a[0] in world else str(world["root"] / "nope"),
                     *[x for part in a[1:] for x in part]])


def _eval_args(world):
    return st.tuples(
        st.sampled_from(["plain", "cond"]), _option("--examples", numbers), _option("--timesteps", numbers),
        _option("--samples", numbers), _option("--seed", numbers),
    ).map(lambda a: ["eval", str(world[a[0]]), *[x for part in a[1:] for x in part]])


SET_KEYS = ["train.steps", "train.lr", "run.seed", "diffusion.timesteps", "sample.steps", "sample.num",
            "data.batch_size", "model.options.in_channels", "diffusion.schedule", "sample.sampler", "train.foo"]


def _train_args(world):
    sets = st.lists(st.tuples(st.sampled_from(SET_KEYS), st.sampled_from(["0", "1", "2", "-1", "abc", '"cosine"',
                                                                          "1e38", "[1]", "true", "3"])), max_size=3)
    return sets.map(lambda items: ["train", str(world["config"]), "--no-progress",
                                   *[x for k, v in items for x in ("--set", f"{k}={v}")]])


def _export_args(world):
    return st.tuples(st.sampled_from(["shapes", "tones", "solids", "planets", ""]),
                     _option("--num", numbers)).map(lambda a: ["export-demo", a[0], "OUT", *a[1]])


class _Hang(Exception):
    pass


def _run(argv):
    err = io.StringIO()

    def alarm(signum, frame):
        raise _Hang(" ".join(argv))

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(TIME_LIMIT)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, err.getvalue()


def _check(code, err, argv):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    if code == 0:
        return True
    assert len(lines) == 1, f"{argv}: {err}"
    assert "Traceback" not in err and "internal error" not in err, f"{argv}: {err}"
    return False


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_sample_and_eval_arguments_succeed_or_fail_in_one_line(world, tmp_path_factory, data):
    argv = data.draw(st.one_of(_sample_args(world), _eval_args(world)))
    out = tmp_path_factory.mktemp("out") / "samples"
    if argv[0] == "sample":
        argv = [*argv, "--out", str(out), "--no-progress"]
    else:
        argv = [*argv, "--no-progress"]
    code, err = _run(argv)
    if _check(code, err, argv) and argv[0] == "sample":
        # Success means what was asked for is on disk: as many numbered files as --num (or the labels) say.
        num = argv[argv.index("--num") + 1] if "--num" in argv else None
        written = sorted(p.name for p in out.iterdir() if p.name[:6].isdigit())
        if num is not None:
            assert len(written) == int(num), argv
        assert written


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_train_and_export_demo_arguments_succeed_or_fail_in_one_line(world, tmp_path_factory, data):
    argv = data.draw(st.one_of(_train_args(world), _export_args(world)))
    root = tmp_path_factory.mktemp("t")
    if argv[0] == "train":
        argv = [*argv, "--set", f"run.dir={root / 'run'}"]
    else:
        argv = [a if a != "OUT" else str(root / "demo") for a in argv]
    code, err = _run(argv)
    if _check(code, err, argv) and argv[0] == "train":
        steps = [a.split("=", 1)[1] for a in argv if a.startswith("train.steps=")]
        expected = int(steps[-1]) if steps else 1
        assert (root / "run" / "checkpoints" / f"step_{expected:08d}").is_dir(), argv
