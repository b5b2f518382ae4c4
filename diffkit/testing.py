"""Tools for testing diffusion code and backbones: the exact denoiser for Gaussian data, and more.

For data x0 ~ N(μ, s²) (each element independent) and x_t = a·x0 + σ·ε with a² = ᾱ_t, σ² = 1 - ᾱ_t,
the posterior of ε given x_t is Gaussian with

    E[ε | x_t]   = σ·(x_t - a·μ) / (ᾱ_t·s² + σ²)
    Var[ε | x_t] = ᾱ_t·s² / (ᾱ_t·s² + σ²)

so the best possible network is known in closed form, and so is the lowest reachable loss. A sampler
driven by it has no error but its own discretisation: an exact test of the engine and of samplers.

:func:`check_backbone` checks that a denoising network follows the backbone protocol, for plugin
authors and for the built-in backbones' own tests.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn as nn

from . import objectives


class GaussianOracle(nn.Module):
    """The exact predictor (for ``objective``) of a diffusion trained on N(mean, std²) data.

    ``eps_noise`` > 0 makes it the slightly imperfect denoiser a trained network is: independent
    N(0, eps_noise²) noise (from its own generator, seeded by ``seed``) is added to the predicted ε
    at every call, before the conversion to ``objective``. ``data_std`` is that of the engine it serves
    (``GaussianDiffusion(data_std=...)``), which scales the oracle's input and wants its target scaled.
    """

    def __init__(
        self,
        alphas_cumprod: torch.Tensor,
        mean: float = 0.0,
        std: float = 1.0,
        objective: str = "eps",
        eps_noise: float = 0.0,
        seed: int = 0,
        data_std: float = 1.0,
    ) -> None:
        super().__init__()
        objectives.check_objective(objective)
        self.register_buffer("alphas_cumprod", torch.as_tensor(alphas_cumprod, dtype=torch.float64))
        self.mean = float(mean)
        self.std = float(std)
        self.data_std = float(data_std)
        self.objective = objective
        self.eps_noise = float(eps_noise)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        abar = self.alphas_cumprod[t].reshape(-1, *((1,) * (x_t.ndim - 1)))
        a, sigma = abar.sqrt(), (1 - abar).sqrt()
        # An engine with data_std d feeds x_t / sqrt(ᾱd² + 1 - ᾱ) and wants the target for x0/d at
        # (a·d, σ) over that same norm.
        norm = (abar * self.data_std**2 + sigma**2).sqrt()
        x = x_t.double() * norm if self.data_std != 1.0 else x_t.double()
        eps = sigma * (x - a * self.mean) / (abar * self.std**2 + sigma**2)
        if self.eps_noise:
            noise = torch.randn(x.shape, generator=self.generator, dtype=torch.float64)
            eps = eps + self.eps_noise * noise.to(x.device)
        x0 = (x - sigma * eps) / a
        if self.data_std != 1.0:
            return objectives.training_target(self.objective, x0 / self.data_std, eps, a * self.data_std / norm,
                                              sigma / norm).to(x_t.dtype)
        return objectives.training_target(self.objective, x0, eps, a, sigma).to(x_t.dtype)


class CorrelatedGaussianOracle(nn.Module):
    """The exact predictor of a diffusion trained on N(mean, Σ) data with a correlated, separable Σ.

    Σ = std²·R_1 ⊗ … ⊗ R_n over the example's axes ``shape = (C, *spatial)``, channels included,
    where R_k[i, j] = ρ_k^|i-j| is an AR(1) correlation along axis k (``rho`` one value per axis,
    or one for all). With Σ = U Λ Uᵀ (U the product of each axis's eigenvectors) the posterior mean
    E[x0 | x_t] = μ + Σ a (a²Σ + σ²I)⁻¹ (x_t - aμ) is a per-coordinate shrinkage in the eigenbasis.
    :meth:`conditional` gives the true distribution of the unknown part given the known part.
    """

    def __init__(
        self,
        alphas_cumprod: torch.Tensor,
        shape: Sequence[int],
        rho: Union[float, Sequence[float]] = 0.8,
        mean: float = 0.0,
        std: float = 1.0,
        objective: str = "eps",
    ) -> None:
        super().__init__()
        objectives.check_objective(objective)
        self.shape = tuple(int(n) for n in shape)
        rhos = [float(rho)] * len(self.shape) if isinstance(rho, (int, float)) else [float(r) for r in rho]
        if len(rhos) != len(self.shape) or not all(-1 < r < 1 for r in rhos):
            raise ValueError(f"rho must be one value in (-1, 1) or one per axis of {self.shape}, got {rho}")
        self.rho, self.mean, self.std, self.objective = rhos, float(mean), float(std), objective
        self.register_buffer("alphas_cumprod", torch.as_tensor(alphas_cumprod, dtype=torch.float64))
        eigenvalues = torch.ones((), dtype=torch.float64)
        for k, (n, r) in enumerate(zip(self.shape, rhos)):
            idx = torch.arange(n, dtype=torch.float64)
            lam, vec = torch.linalg.eigh(r ** (idx[:, None] - idx[None, :]).abs())
            self.register_buffer(f"basis{k}", vec)
            eigenvalues = eigenvalues[..., None] * lam
        self.register_buffer("eigenvalues", self.std**2 * eigenvalues)  # Λ, shaped like one example

    def _rotate(self, x: torch.Tensor, transpose: bool) -> torch.Tensor:
        """Uᵀx (``transpose``) or Ux, one axis at a time; x is (B, *shape)."""
        for k in range(len(self.shape)):
            u = getattr(self, f"basis{k}")
            x = torch.movedim(torch.movedim(x, k + 1, -1) @ (u if transpose else u.T), -1, k + 1)
        return x

    def covariance(self) -> torch.Tensor:
        """Σ as a dense (N, N) float64 matrix, N the number of elements of one example (row-major order)."""
        cov = torch.ones(1, 1, dtype=torch.float64)
        for n, r in zip(self.shape, self.rho):
            idx = torch.arange(n, dtype=torch.float64)
            cov = torch.kron(cov, r ** (idx[:, None] - idx[None, :]).abs())
        return self.std**2 * cov

    def conditional(self, known: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the true conditional N(μ_u + Σ_uk Σ_kk⁻¹ (x_k - μ_k), Σ_uu - Σ_uk Σ_kk⁻¹ Σ_ku)
        of the unknown elements (``mask`` False) of one example given its known ones (``mask`` True),
        both shaped like one example (known elements: their value and std 0)."""
        known = known.double().reshape(-1)
        m = torch.broadcast_to(mask, self.shape).reshape(-1).bool()
        cov = self.covariance()
        gain = torch.linalg.solve(cov[m][:, m], cov[m][:, ~m]).T  # Σ_uk Σ_kk⁻¹
        mean, var = known.clone(), torch.zeros_like(known)
        mean[~m] = self.mean + gain @ (known[m] - self.mean)
        var[~m] = (cov[~m][:, ~m] - gain @ cov[m][:, ~m]).diagonal()
        return mean.reshape(self.shape), var.clamp_min(0).sqrt().reshape(self.shape)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        abar = self.alphas_cumprod[t].reshape(-1, *((1,) * (x_t.ndim - 1)))
        a, sigma = abar.sqrt(), (1 - abar).sqrt()
        x = x_t.double()
        z = self._rotate(x - a * self.mean, transpose=True)
        x0 = self.mean + self._rotate(a * self.eigenvalues / (abar * self.eigenvalues + sigma**2) * z, transpose=False)
        eps = (x - a * x0) / sigma
        return objectives.training_target(self.objective, x0, eps, a, sigma).to(x_t.dtype)


def gaussian_min_loss(alphas_cumprod: torch.Tensor, std: float = 1.0, objective: str = "eps") -> float:
    """The lowest reachable training loss (uniform t) for N(·, std²) data: the mean posterior variance."""
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    var_eps = abar * std**2 / (abar * std**2 + 1 - abar)
    if objective == "eps":
        per_t = var_eps
    elif objective == "x0":
        per_t = var_eps * (1 - abar) / abar  # x0 = (x_t - σ·ε)/a
    elif objective == "v":
        per_t = var_eps / abar  # v = (ε - σ·x_t)/a
    else:
        objectives.check_objective(objective)
        raise AssertionError
    return float(per_t.mean())


# --- conformance of a backbone to the protocol ---------------------------------------------------

BackboneFactory = Union[str, Callable[..., nn.Module]]


def check_backbone(
    factory: BackboneFactory,
    *,
    input_shape: Sequence[int],
    cond_dim: Optional[int] = None,
    batch_size: int = 3,
    num_timesteps: int = 1000,
    seed: int = 0,
    check_unconditional: bool = True,
    check_autocast: bool = True,
    **options: Any,
) -> list[str]:
    """Check that a backbone follows diffkit's backbone protocol; return the properties checked.

    ``factory`` is a registered backbone name or a callable; it is called as ``factory(**options)``,
    with ``cond_dim=cond_dim`` added when ``cond_dim`` is given. ``input_shape`` is one example's
    shape, ``(C, *spatial)``. The checks, each named in the ``AssertionError`` it raises on failure:

    - ``module``: the factory returns an ``nn.Module``;
    - ``shape``: ``model(x_t, t, cond)`` returns a finite tensor of ``x_t``'s shape and dtype;
    - ``deterministic``: two calls in eval mode give identical outputs;
    - ``batch independence``: changing one example leaves the others' outputs unchanged (eval mode);
    - ``uses t``: the output changes with the timestep (``t`` spans 0 … ``num_timesteps``-1);
    - ``uses cond`` (with ``cond_dim``): the output changes with ``cond``;
    - ``gradients``: a backward pass reaches every trainable parameter (and ``cond``) with a
      non-zero gradient;
    - ``bf16 autocast``: under ``torch.autocast("cpu", torch.bfloat16)`` the eval-mode output has the
      right shape and lies within 10 % (relative norm) of the float32 output, and a training step
      gives finite gradients;
    - ``unconditional`` (with ``cond_dim``): built without ``cond_dim``, it runs with ``cond=None``.

    Zero-initialised layers (adaLN-Zero gates, zero output convolutions, as in DiT or guided
    diffusion) make a fresh network's output independent of ``cond`` and ``t`` and stop the gradient
    upstream of them: a correct network would fail ``uses cond`` and ``gradients`` at its
    initialisation. The checker therefore first fills every parameter that is exactly zero
    everywhere with small noise (std 0.02). It tests how the network is wired, not how it is
    initialised; a parameter that the forward pass never uses still fails ``gradients``.

    The global random state is restored afterwards.
    """
    name = factory if isinstance(factory, str) else getattr(factory, "__name__", type(factory).__name__)
    label = f"check_backbone({name})"

    def fail(prop: str, detail: str) -> AssertionError:
        return AssertionError(f"{label}: property '{prop}' failed: {detail}")

    def build(with_cond: bool) -> nn.Module:
        kwargs = dict(options)
        if with_cond:
            kwargs["cond_dim"] = cond_dim
        if isinstance(factory, str):
            from .registry import create_backbone

            model = create_backbone(factory, **kwargs)
        else:
            model = factory(**kwargs)
        if not isinstance(model, nn.Module):
            raise fail("module", f"the factory returned {type(model).__name__}, not an nn.Module")
        return model

    checked = ["module"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(cond_dim is not None)
        _wake_zero_parameters(model)
        gen = torch.Generator().manual_seed(seed)
        shape = (batch_size, *input_shape)
        x = torch.randn(shape, generator=gen)
        t = torch.randint(0, num_timesteps, (batch_size,), generator=gen)
        t[0], t[-1] = 0, num_timesteps - 1
        cond = torch.randn(batch_size, cond_dim, generator=gen) if cond_dim is not None else None
        weights = torch.randn(shape, generator=gen)

        model.eval()
        with torch.no_grad():
            try:
                out = model(x, t, cond=cond)
            except Exception as exc:
                raise fail("shape", f"model(x_t, t, cond) raised {type(exc).__name__}: {exc} "
                                    f"(x_t {tuple(shape)}, t {tuple(t.shape)}, cond "
                                    f"{None if cond is None else tuple(cond.shape)})") from exc
            if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise fail("shape", f"output {got} for input {tuple(x.shape)}; a backbone returns its input's shape")
            if out.dtype != x.dtype:
                raise fail("shape", f"output dtype {out.dtype} for input dtype {x.dtype}")
            if not bool(torch.isfinite(out).all()):
                raise fail("shape", "output has NaN or infinite values")
            checked.append("shape")

            again = model(x, t, cond=cond)
            if not torch.equal(out, again):
                raise fail("deterministic", f"two eval-mode calls differ by up to {_max_diff(out, again):.3g}")
            checked.append("deterministic")

            x_other = x.clone()
            x_other[0] = torch.randn(input_shape, generator=gen)
            out_other = model(x_other, t, cond=cond)
            if not _close(out_other[1:], out[1:]):
                raise fail("batch independence", f"changing example 0 changed the outputs of the others by up to "
                                                 f"{_max_diff(out_other[1:], out[1:]):.3g}")
            checked.append("batch independence")

            out_t = model(x, num_timesteps - 1 - t, cond=cond)
            if _close(out_t, out):
                raise fail("uses t", "the output does not change when t changes")
            checked.append("uses t")

            if cond is not None:
                out_c = model(x, t, cond=torch.randn(cond.shape, generator=gen))
                if _close(out_c, out):
                    raise fail("uses cond", f"the output does not change when cond changes (cond_dim={cond_dim})")
                checked.append("uses cond")

        model.train()
        model.zero_grad(set_to_none=True)
        cond_leaf = cond.clone().requires_grad_() if cond is not None else None
        (model(x, t, cond=cond_leaf) * weights).sum().backward()
        dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not bool(p.grad.any()))]
        if dead:
            raise fail("gradients", f"no gradient reaches parameter(s) {dead}")
        if cond_leaf is not None and (cond_leaf.grad is None or not bool(cond_leaf.grad.any())):
            raise fail("gradients", "no gradient reaches cond (a conditioner could not learn)")
        checked.append("gradients")

        if check_autocast:
            model.eval()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                try:
                    low = model(x, t, cond=cond)
                except Exception as exc:
                    raise fail("bf16 autocast", f"{type(exc).__name__}: {exc}") from exc
            if low.shape != x.shape or not bool(torch.isfinite(low).all()):
                raise fail("bf16 autocast", f"output {tuple(low.shape)}, finite: {bool(torch.isfinite(low).all())}")
            error = float((low.float() - out).norm() / out.norm().clamp_min(1e-12))
            if error > 0.1:
                raise fail("bf16 autocast", f"output differs from float32 by {error:.1%} (relative norm), over 10%")
            model.train()
            model.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = (model(x, t, cond=cond).float() * weights).sum()
            loss.backward()
            bad = [n for n, p in model.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
            if bad or not bool(torch.isfinite(loss)):
                raise fail("bf16 autocast", f"a training step gives a non-finite loss or gradients (parameters {bad})")
            checked.append("bf16 autocast")

        if cond_dim is not None and check_unconditional:
            plain = build(False).eval()
            with torch.no_grad():
                try:
                    out_plain = plain(x, t, cond=None)
                except Exception as exc:
                    raise fail("unconditional", f"built without cond_dim, model(x_t, t, None) raised "
                                                f"{type(exc).__name__}: {exc}") from exc
            if not isinstance(out_plain, torch.Tensor) or out_plain.shape != x.shape:
                raise fail("unconditional", "built without cond_dim, the output's shape is not the input's")
            checked.append("unconditional")
    return checked


def _wake_zero_parameters(model: nn.Module, std: float = 0.02) -> None:
    """Fill every floating-point parameter that is exactly zero everywhere with N(0, std²) noise."""
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.numel() and not bool(p.any()):
                p.normal_(0.0, std)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float32 round-off, relative to the outputs' scale."""
    scale = float(torch.maximum(a.abs().max(), b.abs().max())) if a.numel() else 0.0
    return _max_diff(a, b) <= 1e-5 * max(scale, 1e-12)
