"""Sampler quality per network call: diffkit's samplers and diffusers' schedulers on exact denoisers.

Run: python benchmarks/sampler_quality.py [--samples N] [--steps 5 6 8 10 15 20] [--stds 0.3 0.5 0.25]
(diffusers is a benchmark-only dependency: pip install -r benchmarks/requirements.txt; without it
only diffkit's rows are written.) Writes benchmarks/results/sampler_quality.md and .json.

**Gaussian data** (issue 14's test: N(0.3, 0.3²), 64 values per example, 1,024 samples, T = 1000;
also std 0.5 and 0.25). The best possible ε-predictor is known in closed form (diffkit.testing's
GaussianOracle), so a deterministic sampler driven by it has no error but its discretisation. Every
sampler starts from the same noise x_T. Each cell gives the samples' std relative to the data's, and,
in brackets, the same without sampling noise: a deterministic sampler maps each value of x_T affinely
(the oracle acts per value), so regressing the samples on x_T recovers the map's slope a exactly, and
a/std - 1 is the std error of the sampler's whole output distribution.

**A mixture of Gaussians** (non-Gaussian, multimodal): 8 isotropic Gaussians in 2-D, whose exact
denoiser is the softmax-weighted sum of the components' posterior means (MixtureOracle below). Each
cell: the sliced Wasserstein distance between the samples and fresh true samples, relative to the
distance between two true sample sets of the same size (1.0: as close as the data to itself).

Schedules: diffkit's linear and cosine β at T = 1000; diffusers builds the same β from its own names
("linear", "squaredcos_cap_v2"; checked equal to 1e-7), the way its users would.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn

import diffkit
from diffkit import GaussianDiffusion
from diffkit.schedules import cosine_beta_schedule, linear_beta_schedule
from diffkit.testing import GaussianOracle

MEAN, T = 0.3, 1000
SCHEDULES = {"linear": linear_beta_schedule, "cosine": cosine_beta_schedule}
DIFFUSERS_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
RESULTS = Path(__file__).parent / "results"
SEED = 0
# Issue 14's targets for the default sampler (|std error| by network calls) on the Gaussian oracle;
# 10 and 20 calls were issue 5's bar.
TARGETS = {5: 0.10, 8: 0.025, 10: 0.025, 20: 0.025}
HEADLINE = "diffkit dpm-solver++ (default)"
# What was tried where the default trails diffusers' best option, or ties with it (printed when it does).
TRIED = [
    "- Steps: the `logsnr-tapered` family (where the first step jumps to and the taper κ, for each budget) was "
    "searched on a grid, scored by the worst noise-free std error over data std 0.1 to 1 and both schedules; the "
    "rule in `diffkit.samplers.logsnr_tapered_settings` is a straight-line fit to the per-budget optima. At 8 calls "
    "on the linear schedule, data std 0.3, it ties with diffusers' even log-SNR steps (+0.16% noise-free for both, "
    "+0.03% sampled): there the indices near the data end snap onto neighbours (…, 19, 4, 0), which moves the result "
    "by tenths of a percent, so no setting is clearly better; the same diffusers option is at −9.1% on the cosine "
    "schedule and +2.0% for data std 0.5.",
    "- Orders: third-order solvers at the same steps overshoot the std on this oracle below 15 calls: at 8 calls "
    "(data std 0.3, linear / cosine, noise-free) DPM-Solver++(3M) +9.6% / +10.3%, UniPC (exact coefficients, "
    "corrector on) −15.6% / −18.0% at order 1, +5.9% / +6.6% at order 2, +9.9% / +11.5% at order 3. From 15 calls "
    "the default switches to 3M, which is closer on the Gaussian mixture; on the Gaussian it sits at +0.4% to +1.7%, "
    "a little behind diffusers' UniPC and DPMSolverMultistep defaults for data std 0.5 on the cosine schedule (−1.2% "
    "at 15 calls and −0.4% at 20 there, but −5.9% and −3.0% for data std 0.3); 2M there would be at +0.4%.",
]


class Counting(nn.Module):
    """Wraps a denoiser, counting the network calls."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x_t, t, cond=None):
        self.calls += 1
        return self.model(x_t, t, cond)


class MixtureOracle(nn.Module):
    """The exact ε-predictor for data from Σ_k π_k·N(m_k, s_k²·I), for x_t = a·x0 + σ·ε.

    Given component k, x_t ~ N(a·m_k, v_k·I) with v_k = a²·s_k² + σ², and E[x0 | x_t, k] =
    m_k + a·s_k²/v_k·(x_t - a·m_k); E[x0 | x_t] weighs those by the posterior of k, a softmax of
    log π_k - |x_t - a·m_k|²/(2·v_k) - (d/2)·log v_k.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor):
        super().__init__()
        self.abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.means, self.stds, self.log_w = means.double(), stds.double(), weights.double().log()

    def forward(self, x_t, t, cond=None):
        abar = self.abar[t].reshape(-1, 1, 1)  # (B, 1, 1) against components on dim 1
        a, sigma = abar.sqrt(), (1 - abar).sqrt()
        x = x_t.double().unsqueeze(1)  # (B, 1, d)
        m, s2 = self.means.unsqueeze(0), self.stds.square().reshape(1, -1, 1)
        v = abar * s2 + sigma**2  # (B, K, 1)
        d = x.shape[-1]
        logits = self.log_w.reshape(1, -1) - ((x - a * m).square().sum(-1) / (2 * v[..., 0])) - d / 2 * v[..., 0].log()
        post = logits.softmax(dim=1).unsqueeze(-1)  # (B, K, 1)
        x0 = (post * (m + a * s2 / v * (x - a * m))).sum(1)
        return ((x_t.double() - a[:, 0] * x0) / sigma[:, 0]).to(x_t.dtype)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.multinomial(self.log_w.exp(), n, replacement=True, generator=generator)
        return self.means[k] + self.stds[k, None] * torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)


def mixture(abar: torch.Tensor) -> MixtureOracle:
    """7 components on a ring of radius 0.7 and one in the middle, stds 0.05 to 0.2, unequal weights."""
    angles = torch.arange(7, dtype=torch.float64) * (2 * math.pi / 7)
    means = torch.cat([0.7 * torch.stack([angles.cos(), angles.sin()], 1), torch.zeros(1, 2, dtype=torch.float64)])
    stds = torch.tensor([0.05, 0.1, 0.2, 0.05, 0.1, 0.2, 0.05, 0.15], dtype=torch.float64)
    weights = torch.tensor([1, 2, 1, 2, 1, 2, 1, 3], dtype=torch.float64)
    return MixtureOracle(abar, means, stds, weights / weights.sum())


class SlicedWasserstein:
    """Sliced 2-Wasserstein distance to a fixed reference set: W2 between sorted 1-D projections on
    random directions, root-mean-square over the directions. The reference is projected and sorted once."""

    def __init__(self, reference: torch.Tensor, projections: int = 128, seed: int = 1) -> None:
        g = torch.Generator().manual_seed(seed)
        dirs = torch.randn(reference.shape[1], projections, generator=g, dtype=torch.float64)
        self.dirs = dirs / dirs.norm(dim=0, keepdim=True)
        self.sorted = (reference.double() @ self.dirs).sort(0).values

    def __call__(self, points: torch.Tensor) -> float:
        if len(points) != len(self.sorted):
            raise ValueError(f"need {len(self.sorted)} points, got {len(points)}")
        return float(((points.double() @ self.dirs).sort(0).values - self.sorted).square().mean().sqrt())


Run = Callable[[int, nn.Module, torch.Tensor, int, tuple], torch.Tensor]


def noise(n: int, shape: tuple) -> torch.Tensor:
    """The x_T every sampler starts from: what sample() draws from a generator seeded with SEED."""
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(SEED))


def diffkit_run(sampler: str, **options) -> Run:
    def run(n, model, betas, steps, shape):
        # threshold="none": exact, unclipped sampling (the engine's default clips x̂0 to [-1, 1]).
        d = GaussianDiffusion(model, shape, betas, threshold="none")
        return d.sample(n, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(SEED), **options)

    return run


def diffusers_run(name: str, **config) -> Run:
    def run(n, model, betas, steps, shape):
        import diffusers

        schedule = next(k for k, f in SCHEDULES.items() if torch.equal(f(T), betas))
        scheduler = getattr(diffusers, name)(
            num_train_timesteps=T, beta_schedule=DIFFUSERS_SCHEDULES[schedule], **config
        )
        if float((scheduler.betas.double() - betas).abs().max()) > 1e-7:
            raise AssertionError(f"diffusers' {DIFFUSERS_SCHEDULES[schedule]} β differ from diffkit's {schedule}")
        scheduler.set_timesteps(steps)
        x = noise(n, shape) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            eps = model(x, torch.full((x.shape[0],), int(t), dtype=torch.long))
            x = scheduler.step(eps, t, x).prev_sample
        return x

    return run


def contenders(have_diffusers: bool) -> dict[str, tuple[str, Run, bool]]:
    """label -> (what it is, how to run it, deterministic)."""
    dpm, unipc = "DPMSolverMultistepScheduler", "UniPCMultistepScheduler"
    rows = {
        HEADLINE: (
            "DPM-Solver++, 2M below 15 calls and 3M from 15, `logsnr-tapered` steps placed for the budget",
            diffkit_run("dpm-solver++"), True),
        "diffkit dpm-solver++ order=3": (
            "DPM-Solver++(3M) at every budget, same steps", diffkit_run("dpm-solver++", order=3), True),
        "diffkit unipc (default)": (
            "UniPC, exact coefficients, order 2 below 12 calls and 3 from 12, same steps", diffkit_run("unipc"), True),
        "diffkit dpm-solver++ spacing=logsnr": (
            "default order; even log-SNR steps from T-1 to 0 (as diffusers' use_lu_lambdas)",
            diffkit_run("dpm-solver++", spacing="logsnr"), True),
        "diffkit dpm-solver++-sde (default)": (
            "SDE-DPM-Solver++(2M), churn 1, same steps; stochastic", diffkit_run("dpm-solver++-sde"), False),
        "diffkit ddim (default)": ("η = 0, `trailing` steps", diffkit_run("ddim"), True),
    }
    if have_diffusers:
        rows |= {
            "diffusers DPMSolverMultistep (default)": (
                "2M dpmsolver++, linspace, lower_order_final", diffusers_run(dpm), True),
            "diffusers DPMSolverMultistep use_lu_lambdas": (
                "even log-SNR steps", diffusers_run(dpm, use_lu_lambdas=True), True),
            "diffusers DPMSolverMultistep use_karras_sigmas": (
                "Karras σ, ρ = 7", diffusers_run(dpm, use_karras_sigmas=True), True),
            "diffusers UniPCMultistep (default)": ("bh2, order 2, linspace", diffusers_run(unipc), True),
            "diffusers UniPCMultistep use_karras_sigmas": (
                "Karras σ, ρ = 7", diffusers_run(unipc, use_karras_sigmas=True), True),
        }
    return rows


def _error(exc: Exception) -> dict:
    first = (str(exc).splitlines() or [""])[0][:80]
    return {"error": f"{type(exc).__name__}: {first}" if first else type(exc).__name__}


def measure_gaussian(run: Run, deterministic: bool, schedule: str, steps: int, n: int, std: float) -> dict:
    betas = SCHEDULES[schedule](T)
    model, shape = Counting(GaussianOracle(torch.cumprod(1 - betas, 0), MEAN, std)), (64,)
    try:
        x = run(n, model, betas, steps, shape).double()
    except Exception as exc:  # a scheduler that cannot handle the schedule is a result too
        return _error(exc)
    if not bool(torch.isfinite(x).all()):
        return {"error": "non-finite samples", "calls": model.calls}
    r = {"calls": model.calls, "std_err": float(x.std()) / std - 1, "mean_err": float(x.mean()) - MEAN}
    if deterministic:
        z = noise(n, shape).double().flatten()
        zc, xc = z - z.mean(), x.flatten() - x.mean()
        r["exact_std_err"] = float((zc * xc).sum() / zc.square().sum()) / std - 1
    return r


def measure_mixture(run: Run, schedule: str, steps: int, n: int, references: dict) -> dict:
    betas = SCHEDULES[schedule](T)
    if schedule not in references:  # fresh true samples, and how far a second true set lands from them
        oracle = mixture(torch.cumprod(1 - betas, 0))
        g = torch.Generator().manual_seed(SEED + 100)
        distance = SlicedWasserstein(oracle.sample(n, g))
        references[schedule] = (oracle, distance, distance(oracle.sample(n, g)))
    oracle, distance, floor = references[schedule]
    model = Counting(oracle)
    try:
        x = run(n, model, betas, steps, (2,)).double()
    except Exception as exc:
        return _error(exc)
    if not bool(torch.isfinite(x).all()):
        return {"error": "non-finite samples", "calls": model.calls}
    swd = distance(x)
    return {"calls": model.calls, "swd": swd, "swd_true": floor, "swd_ratio": swd / floor}


def pct(v: float) -> str:
    return "NaN" if math.isnan(v) else f"{100 * v:+.1f}%"


def gauss_cell(r: dict, steps: int) -> str:
    if "error" in r:
        return "fails" if r["error"] != "non-finite samples" else "NaN"
    calls = "" if r["calls"] == steps else f" ({r['calls']} calls)"
    exact = f" ({pct(r['exact_std_err'])})" if "exact_std_err" in r else ""
    return pct(r["std_err"]) + exact + calls


def key(r: dict) -> float:
    """How far a run is from the data's std (the noise-free figure where there is one)."""
    if "error" in r:
        return math.inf
    return abs(r.get("exact_std_err", r["std_err"]))


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024, help="samples of 64 values per Gaussian run")
    parser.add_argument("--mixture-samples", type=int, default=16_384, help="2-D samples per mixture run")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 6, 8, 10, 15, 20], help="network calls")
    parser.add_argument("--stds", type=float, nargs="+", default=[0.3, 0.5, 0.25], help="data standard deviations")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small elementwise work: more threads only contend

    try:
        import diffusers
    except ImportError:
        diffusers = None
        print("diffusers is not installed (pip install -r benchmarks/requirements.txt): diffkit rows only")
    rows = contenders(diffusers is not None)
    ours = [label for label in rows if label.startswith("diffkit")]
    theirs = [label for label in rows if label.startswith("diffusers")]
    columns = [(s, n) for s in SCHEDULES for n in args.steps]
    header = "| sampler | " + " | ".join(f"{s} {n}" for s, n in columns) + " |"
    rule = "| --- |" + " ---: |" * len(columns)

    values = args.samples * 64
    lines = [
        "# Sampler quality per network call (exact denoisers)",
        "",
        f"Gaussian data: the exact ε-predictor (`diffkit.testing.GaussianOracle`), T = {T}, {args.samples:,} samples "
        f"of 64 values ({values:,} values; the std of a sample that size is itself uncertain by about "
        f"{100 / (2 * values) ** 0.5:.2f}%), the same x_T for every sampler. Each cell: the samples' std error "
        "relative to the data's, and in brackets the noise-free std error of the sampler's output distribution "
        "(the slope of its affine map x_T → sample; deterministic samplers only). diffkit runs with "
        "`threshold=\"none\"` (exact, unclipped); otherwise every row uses defaults but for the named option. "
        "\"fails\": the scheduler raised an error; NaN: it returned non-finite samples.",
        "",
        f"Issue 14's targets for `{HEADLINE}`: |std error| ≤ 10% at 5 calls and ≤ 2.5% at 8, 10 and 20 calls, "
        "both schedules, and in every column closer than the best diffusers option.",
        "",
    ]
    record: dict = {"gaussian": {}, "mixture": {}}
    misses: list[str] = []
    failures: set[str] = set()
    for std in args.stds:
        results: dict = {}
        for label, (_, run, deterministic) in rows.items():
            for schedule, steps in columns:
                r = results[label, schedule, steps] = measure_gaussian(run, deterministic, schedule, steps, args.samples, std)
                print(f"std {std} {label:46s} {schedule:6s} {steps:3d}: {gauss_cell(r, steps)}", flush=True)
                if "error" in r:
                    failures.add(f"- {label}, {schedule}: `{r['error']}`")
        lines += [f"## Data N({MEAN}, {std}²)" + (" — issue 14's test" if std == 0.3 else ""), "", header, rule]
        for label in rows:
            lines.append(f"| {label} | " + " | ".join(gauss_cell(results[label, s, n], n) for s, n in columns) + " |")
        if theirs:
            best = {c: min(theirs, key=lambda label: key(results[(label, *c)])) for c in columns}
            lines.append("| *best diffusers option* | " + " | ".join(
                gauss_cell(results[(best[c], *c)], c[1]) + " " + best[c].split(" ", 1)[1].replace("Multistep", "")
                for c in columns) + " |")
            verdicts = []
            for c in columns:
                mine, other = results[(HEADLINE, *c)], results[(best[c], *c)]
                target = TARGETS.get(c[1])
                ok_target = target is None or abs(mine["std_err"]) <= target
                # Closer than diffusers' best: by the noise-free figure, and on these very samples.
                ok_sampled = abs(mine["std_err"]) < abs(other.get("std_err", math.inf))
                ok_exact = key(mine) < key(other)
                tie = abs(key(mine) - key(other)) < 1e-4  # noise-free errors equal to 0.01 points
                verdicts.append(("target ✓" if target and ok_target else "target ✗" if target else "–") + ", "
                                + ("ties best (=)" if tie else "beats best ✓" if ok_sampled and ok_exact
                                   else "beats best (noise-free only)" if ok_exact
                                   else "beats best (sampled only)" if ok_sampled else "behind best ✗"))
            lines.append("| *default vs targets* | " + " | ".join(verdicts) + " |")
            misses += [f"{s} {n} calls, data std {std}" for (s, n), v in zip(columns, verdicts) if "✗" in v]
            misses += [f"{s} {n} calls, data std {std} (a tie: within 0.01 points)" for s, n in columns
                       if abs(key(results[(HEADLINE, s, n)]) - key(results[(best[(s, n)], s, n)])) < 1e-4]
        lines.append("")
        record["gaussian"][str(std)] = [{"sampler": k[0], "schedule": k[1], "steps": k[2], **v} for k, v in results.items()]

    mix: dict = {}
    references: dict = {}
    for label, (_, run, _) in rows.items():
        for schedule, steps in columns:
            r = mix[label, schedule, steps] = measure_mixture(run, schedule, steps, args.mixture_samples, references)
            print(f"mixture {label:46s} {schedule:6s} {steps:3d}: {r.get('swd_ratio', r.get('error'))}", flush=True)
            if "error" in r:
                failures.add(f"- {label}, {schedule} (mixture): `{r['error']}`")
    floor = next(r for r in mix.values() if "swd_true" in r)["swd_true"]
    lines += [
        "## A mixture of 8 Gaussians in 2-D (non-Gaussian check)",
        "",
        f"Exact denoiser (`MixtureOracle` in the script), {args.mixture_samples:,} samples. Each cell: sliced "
        f"Wasserstein distance (128 directions) to fresh true samples, relative to the distance between two true "
        f"sample sets of that size ({floor:.4f}); 1.0 is as good as it gets.",
        "",
        header,
        rule,
    ]
    def swd(r: dict) -> float:
        return r.get("swd_ratio", math.inf)

    for label in rows:
        lines.append(f"| {label} | " + " | ".join(
            ("fails" if "error" in mix[label, s, n] else f"{mix[label, s, n]['swd_ratio']:.2f}") for s, n in columns) + " |")
    if theirs:
        best = {c: min(theirs, key=lambda label: swd(mix[(label, *c)])) for c in columns}
        lines.append("| *best diffusers option* | " + " | ".join(
            f"{swd(mix[(best[c], *c)]):.2f} " + best[c].split(" ", 1)[1].replace("Multistep", "") for c in columns) + " |")
        lines.append("| *default vs best* | " + " | ".join(
            "beats best ✓" if swd(mix[(HEADLINE, *c)]) < swd(mix[(best[c], *c)]) else "behind best ✗" for c in columns)
            + " |")
    record["mixture"] = [{"sampler": k[0], "schedule": k[1], "steps": k[2], **v} for k, v in mix.items()]

    if misses:
        lines += ["", "Where the default is not clearly ahead of diffusers' best (" + "; ".join(misses) + "): what was tried.",
                  "", *TRIED]
    lines += ["", "Rows:", ""] + [f"- {label}: {what}" for label, (what, _, _) in rows.items()]
    if failures:
        lines += ["", "Failures:", ""] + sorted(failures)
    lines += [
        "",
        f"torch {torch.__version__}, diffkit {diffkit.__version__}"
        + (f", diffusers {diffusers.__version__}" if diffusers is not None else "")
        + f", {platform.machine()}. Run: `python benchmarks/sampler_quality.py`.",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sampler_quality.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "sampler_quality.json").write_text(json.dumps(record, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
