"""The DDPM engine: forward noising, the reverse step, the training loss and sampling, for any tensor rank."""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import numbers
from typing import Any, Iterator, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import inpaint, likelihood, objectives
from .registry import PluginError
from .samplers import DEFAULT_SPACING, SAMPLERS, VARIANCES, noise_like, timestep_schedule


def extract(a: torch.Tensor, t: torch.Tensor, x_shape: Sequence[int]) -> torch.Tensor:
    """``a[t]`` shaped ``(B, 1, …, 1)`` with ``len(x_shape)`` dims, so it broadcasts over a tensor of any rank.

    ``t`` is a 1-D integer tensor of timestep indices, one per example (``torch.full((B,), t)`` for one t)."""
    if not isinstance(t, torch.Tensor) or t.ndim != 1 or t.dtype not in (torch.int64, torch.int32):
        kind = f"a {t.ndim}-D {t.dtype} tensor" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"t must be a 1-D integer tensor of timesteps, one per example; got {kind}")
    try:
        out = a.gather(-1, t)
    except RuntimeError as exc:  # on the CPU; a GPU reports an index out of range as a device-side assert
        if "out of bounds" not in str(exc):
            raise
        raise ValueError(f"t must lie in 0…{a.shape[-1] - 1} (the schedule's timesteps), got {int(t.min())}…"
                         f"{int(t.max())}") from None
    return out.reshape(t.shape[0], *((1,) * (len(x_shape) - 1)))


def as_labels(y: Any) -> Optional[torch.Tensor]:
    """Labels as a tensor: a list or array of class indices becomes one (a tensor is left as it is)."""
    if y is None or isinstance(y, torch.Tensor):
        return y
    return torch.as_tensor(y)


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """``module`` (every submodule) in eval mode within the block; each one's own mode restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _in_eval_mode(method):
    """Sampling and likelihoods never train: dropout (the backbone's, the conditioner's label dropout) is off
    whatever mode the module is in, and every submodule's mode is restored after."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with evaluating(self):
            return method(self, *args, **kwargs)

    return wrapper


# Coefficients derived from β, kept in float64 whatever dtype the module is cast to (see _apply).
_SCHEDULE_BUFFERS = (
    "betas",
    "alphas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "reciprocal_sqrt_alphas",
    "remove_noise_coeff",
    "sigma",
    "posterior_variance",
    "scaled_a",
    "scaled_s",
    "input_scale",
)


class GaussianDiffusion(nn.Module):
    """Gaussian diffusion of Ho et al. 2020 around any backbone ``model(x_t, t, cond=None)``.

    ``input_shape`` is one example's shape without the batch, ``(C, *spatial)`` of any rank.
    ``variance`` picks the DDPM sampler's σ²: ``"beta"`` (σ² = β, as the seed) or ``"posterior"`` (β̃).
    ``threshold`` keeps the predicted x0 in [-1, 1] while sampling, for data scaled to that range as
    the seed advises: ``"clip"`` (clamp, the default), ``"dynamic"`` (Imagen's dynamic thresholding at
    ``threshold_percentile``) or ``"none"`` (for data that is not in [-1, 1], or an exact denoiser).
    Clipping is the default because at t = T-1 the schedule's sqrt(ᾱ) is tiny (4.9e-5 on the cosine
    schedule, T = 1000): x̂0 = (x_t - sqrt(1-ᾱ)·ε̂)/sqrt(ᾱ) multiplies any error of a trained ε̂ by 1/sqrt(ᾱ), and
    unclipped samples then leave the data's range by orders of magnitude. ``loss_weighting`` is ``"none"`` (plain MSE) or
    ``"min-snr"`` (Min-SNR-γ of Hang et al. 2023, ``min_snr_gamma``), the same for every objective.
    ``data_std`` is the data's standard deviation (σ_data of Karras et al. 2022): the network's input and
    its objective are taken in units of it, so both have unit variance at every step
    (:func:`diffkit.objectives.scaled_coefficients`); Min-SNR then reads the SNR in those units too. The
    default 1 leaves everything as in the seed. On the spoken digits (std 0.1) it lowered the noise floor of
    the samples by 6 dB; on the tones (std 0.47) fewer clips came out at the right pitch
    (benchmarks/results/speech_digits.md): measure before setting it.
    """

    def __init__(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        betas: Union[torch.Tensor, Sequence[float]],
        *,
        objective: str = "eps",
        conditioner: Optional[nn.Module] = None,
        variance: str = "beta",
        clip_x0: Optional[bool] = None,
        threshold: str = "clip",
        threshold_percentile: float = 0.995,
        loss_weighting: str = "none",
        min_snr_gamma: float = 5.0,
        data_std: float = 1.0,
    ) -> None:
        super().__init__()
        objectives.check_objective(objective)
        if clip_x0 is not None:  # the older spelling: True is "clip", False is "none"
            if threshold not in ("clip", "none") or (threshold == "none" and clip_x0):
                raise ValueError(f"clip_x0={clip_x0} contradicts threshold={threshold!r}; give only one of them")
            threshold = "clip" if clip_x0 else "none"
        objectives.check_threshold(threshold, threshold_percentile)
        objectives.check_loss_weighting(loss_weighting, min_snr_gamma)
        if isinstance(data_std, bool) or not isinstance(data_std, numbers.Real) or not 0 < data_std < math.inf:
            raise ValueError(f"data_std must be a positive number (the data's standard deviation), got {data_std!r}")
        if variance not in VARIANCES:
            raise ValueError(f"unknown variance {variance!r}; choose 'beta' (σ²=β) or 'posterior' (σ²=β̃)")
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a backbone (a torch.nn.Module called as model(x_t, t, cond=None)), "
                             f"got {type(model).__name__}")
        if conditioner is not None and not isinstance(conditioner, nn.Module):
            raise ValueError(f"conditioner must be a torch.nn.Module, got {type(conditioner).__name__}")
        if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence) or not input_shape or not all(
                isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in input_shape):
            raise ValueError(f"input_shape must be one example's shape (C, *spatial), positive integers; got {input_shape!r}")
        cond_width, model_width = getattr(conditioner, "dim", None), getattr(model, "cond_dim", None)
        if conditioner is not None and isinstance(cond_width, int) and isinstance(model_width, int) and cond_width != model_width:
            raise ValueError(f"the conditioner's embedding has dim={cond_width} but the backbone was built with "
                             f"cond_dim={model_width}; build them with the same width")
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if betas.ndim != 1 or len(betas) == 0:
            raise ValueError(f"betas must be a non-empty 1-D sequence, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("every beta must lie strictly between 0 and 1")
        self.model = model
        self.conditioner = conditioner
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_timesteps = len(betas)
        self.objective = objective
        self.variance = variance
        self.threshold = threshold
        self.threshold_percentile = threshold_percentile
        self.clip_x0 = threshold == "clip"
        self.loss_weighting = loss_weighting
        self.min_snr_gamma = min_snr_gamma
        self.data_std = float(data_std)

        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        coefs = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "reciprocal_sqrt_alphas": alphas.rsqrt(),
            "remove_noise_coeff": betas / (1.0 - alphas_cumprod).sqrt(),
            "sigma": betas.sqrt(),
            "posterior_variance": betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            **objectives.scaled_coefficients(alphas_cumprod, float(data_std)),
        }
        for name in _SCHEDULE_BUFFERS:
            # Not persistent: they follow from β, so checkpoints hold only learned weights.
            self.register_buffer(name, coefs[name], persistent=False)
        # Follows .to(dtype) like a parameter: the sampling dtype of a backbone without parameters.
        self.register_buffer("dtype_probe", torch.zeros((), dtype=torch.get_default_dtype()), persistent=False)

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        # .to(dtype) must not round the schedule (ᾱ_T ≈ 4e-5 is lost in bf16); .to(device) still moves it.
        saved = {name: self._buffers[name] for name in _SCHEDULE_BUFFERS}
        super()._apply(fn, recurse)
        for name, exact in saved.items():
            self._buffers[name] = exact.to(device=self._buffers[name].device)
        return self

    def _coef(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return extract(getattr(self, name), t, x.shape).to(x.dtype)

    # --- the forward process ---------------------------------------------------------------------

    def perturb_x(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_0) = N(sqrt(ᾱ_t)·x_0, (1-ᾱ_t)·I) with the given noise (Ho et al. 2020, eq. 4)."""
        return (
            self._coef("sqrt_alphas_cumprod", t, x) * x
            + self._coef("sqrt_one_minus_alphas_cumprod", t, x) * noise
        )

    # --- the network and its predictions ---------------------------------------------------------

    def _check_y(self, y: Optional[torch.Tensor], batch_size: int) -> None:
        if y is not None and self.conditioner is None:
            raise ValueError("labels y were given but this GaussianDiffusion has no conditioner")
        if y is not None and len(y) != batch_size:
            raise ValueError(f"got {len(y)} labels for a batch of {batch_size}")

    def _network(self, x_t: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor]) -> torch.Tensor:
        out = self.model(x_t, t, cond=cond)
        if not isinstance(out, torch.Tensor) or out.shape != x_t.shape:
            origin = getattr(self.model, "diffkit_origin", f"backbone {type(self.model).__name__}")
            raise PluginError(
                f"{origin} returned {f'shape {tuple(out.shape)}' if isinstance(out, torch.Tensor) else type(out).__name__} "
                f"for an input of shape {tuple(x_t.shape)}; a backbone must return its input's shape"
            )
        return out

    def _guided_output(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: Optional[torch.Tensor],
        null: Optional[torch.Tensor],
        guidance_scale: float,
    ) -> torch.Tensor:
        if null is None:
            return self._network(x_t, t, cond)
        # Classifier-free guidance (Ho & Salimans 2022): both branches in one network call.
        both = self._network(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, null]))
        out_cond, out_uncond = both.chunk(2)
        return out_uncond + guidance_scale * (out_cond - out_uncond)

    def _conditioning_check(self, y: Optional[torch.Tensor], batch_size: int, guidance_scale: float) -> None:
        self._check_y(y, batch_size)
        if self.conditioner is None and guidance_scale != 1.0:
            raise ValueError("guidance_scale != 1 needs a conditioner and labels y")
        if y is None and guidance_scale != 1.0:
            raise ValueError("guidance_scale != 1 needs labels y")
        classes = getattr(self.conditioner, "num_classes", None)
        if y is not None and classes is not None and len(y):
            labels = torch.as_tensor(y)
            if not labels.is_floating_point() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
                raise ValueError(f"labels must lie in 0…{classes - 1}, got {int(labels.min())}…{int(labels.max())}")

    def _conditioning(
        self, y: Optional[torch.Tensor], batch_size: int, guidance_scale: float
    ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """(cond, null) for sampling: null is set only when classifier-free guidance needs it. The
        conditioner runs in eval mode whatever the module's mode: label dropout is for training only."""
        y = as_labels(y)
        self._conditioning_check(y, batch_size, guidance_scale)
        if self.conditioner is None:
            return None, None
        with evaluating(self.conditioner):
            null = self.conditioner.null(batch_size)
            if y is None:
                return null, None
            cond = self.conditioner(y.to(null.device))
        return cond, (null if guidance_scale != 1.0 else None)

    def predict(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        y: Optional[torch.Tensor] = None,
        guidance_scale: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε̂, x̂0) at x_t, whatever the objective, with guidance and the optional x0 clipping."""
        cond, null = self._conditioning(y, x_t.shape[0], guidance_scale)
        extract(self.alphas_cumprod, t, x_t.shape)  # a t outside the schedule fails here, before the network
        return self._eps_x0(x_t, t, cond, null, guidance_scale)

    def _model_input(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t as the network sees it: in units of ``data_std`` (c_in·x_t), unchanged for data_std 1."""
        return x_t if self.data_std == 1.0 else x_t * self._coef("input_scale", t, x_t)

    def _eps_x0(self, x_t, t, cond, null, guidance_scale):
        x_in = self._model_input(x_t, t)
        output = self._guided_output(x_in, t, cond, null, guidance_scale)
        a = self._coef("sqrt_alphas_cumprod", t, x_t)
        s = self._coef("sqrt_one_minus_alphas_cumprod", t, x_t)
        if self.data_std == 1.0:
            eps, x0 = objectives.eps_and_x0(self.objective, output, x_in, a, s)
        else:
            eps, x0 = objectives.eps_and_x0(self.objective, output, x_in, self._coef("scaled_a", t, x_t),
                                            self._coef("scaled_s", t, x_t))
            x0 = x0 * self.data_std
        if self.threshold != "none":
            x0 = objectives.threshold_x0(x0, self.threshold, self.threshold_percentile)
            eps = objectives.eps_from_x0(x_t, x0, a, s)
        return eps, x0

    # --- the reverse process ---------------------------------------------------------------------

    def remove_noise(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: Optional[torch.Tensor] = None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """The reverse-process mean μθ(x_t, t) = (x_t - β_t/sqrt(1-ᾱ_t)·ε̂) / sqrt(α_t) (Ho et al. 2020, eq. 11)."""
        eps, _ = self.predict(x, t, y, guidance_scale)
        return (x - self._coef("remove_noise_coeff", t, x) * eps) * self._coef("reciprocal_sqrt_alphas", t, x)

    @torch.no_grad()
    @_in_eval_mode
    def sample(
        self,
        batch_size: int,
        *,
        sampler: str = "ddpm",
        steps: Optional[int] = None,
        eta: float = 0.0,
        y: Optional[torch.Tensor] = None,
        guidance_scale: float = 1.0,
        generator: Optional[torch.Generator] = None,
        progress: bool = False,
        known: Optional[torch.Tensor] = None,
        mask: Optional[torch.Tensor] = None,
        resample: Optional[int] = None,
        jump_length: Optional[int] = None,
        resample_below: Optional[float] = None,
        reconstruction: Optional[float] = None,
        **options: Any,
    ) -> torch.Tensor:
        """Samples of shape ``(batch_size, *input_shape)``; ``options`` go to the sampler (e.g. ``spacing``).

        ``steps`` network calls (None: all T); with fewer than T, ``"ddpm"`` is ancestral sampling over
        the strided steps (Nichol & Dhariwal 2021, §4): with ``variance="posterior"`` the same as DDIM
        with η = 1; the default σ² = β (the seed's) adds more noise per strided step. ``generator`` may be
        one ``torch.Generator`` or a list of ``batch_size`` of them: then every example's noise comes from
        its own, so an example does not depend on the others in its batch (sampling split over calls or
        processes gives the same examples).

        With ``known`` and ``mask`` (True = known; each broadcast to the samples' shape, so a per-position
        mask applies to every channel) the known part is held fixed and the rest filled in: see
        :mod:`diffkit.inpaint`. ``resample`` and ``jump_length`` are RePaint's, applied where σ_t/α_t ≤
        ``resample_below`` (each default per sampler: :data:`diffkit.inpaint.DEFAULT_RESAMPLE`); the
        network is called :func:`diffkit.inpaint.network_calls` times (resample × the low-noise steps + the rest).
        ``reconstruction`` (a weight, default off) adds reconstruction guidance toward the known part
        (:func:`diffkit.inpaint.reconstruction_guided`: a backward pass per call as well).
        """
        sampler_fn, timesteps, options = self.check_sample_args(
            batch_size, sampler=sampler, steps=steps, eta=eta, y=y, guidance_scale=guidance_scale, **options)
        device = self.alphas_cumprod.device
        dtype = self.sampling_dtype()
        shape = (batch_size, *self.input_shape)
        if (known is None) != (mask is None):
            raise ValueError("inpainting needs both known= and mask= (True = known)")
        if known is not None:
            known, mask = inpaint.check_known(known, mask, shape)
        elif resample is not None or jump_length is not None or resample_below is not None or reconstruction is not None:
            raise ValueError("resample=, jump_length=, resample_below= and reconstruction= apply to inpainting only: "
                             "give known= and mask= too")
        x = noise_like(shape, generator, device, dtype)

        # The conditioning is the same at every step: embed it once.
        cond, null = self._conditioning(y, batch_size, guidance_scale)

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self._eps_x0(x_t, t, cond, null, guidance_scale)

        if known is None:
            x = sampler_fn(denoise, x, self.alphas_cumprod, timesteps, generator=generator, progress=progress, **options)
        else:
            if reconstruction:
                denoise = inpaint.reconstruction_guided(
                    denoise, self.alphas_cumprod, known, mask, reconstruction,
                    lambda x0: objectives.threshold_x0(x0, self.threshold, self.threshold_percentile))
            default = inpaint.default_resample(sampler)
            x = inpaint.sample_known(sampler_fn, denoise, x, self.alphas_cumprod, timesteps, known, mask,
                                     resample=default.resample if resample is None else resample,
                                     jump_length=default.jump_length if jump_length is None else jump_length,
                                     resample_below=default.resample_below if resample_below is None else resample_below,
                                     generator=generator, progress=progress, **options)
        # With thresholding the data live in [-1, 1]: a multistep sampler's last combination of clipped
        # x̂0 may still leave it by a rounding error (UniPC: ±1.0000001), which is kept out too.
        if self.threshold == "none":
            return x
        x = x.clamp(-1.0, 1.0)
        # The known part is returned exactly as given, also where it lies outside [-1, 1].
        return x if known is None else torch.where(mask, known.to(x.dtype), x)

    def sampling_dtype(self) -> torch.dtype:
        """The dtype samples are made in: the backbone's parameters' (which follow ``.to(dtype)``), or for a
        backbone without parameters (an analytic denoiser such as :class:`diffkit.testing.GaussianOracle`) the
        dtype the engine was last cast to, torch's default until then."""
        return self._parameter_dtype() or self.dtype_probe.dtype

    def _parameter_dtype(self) -> Optional[torch.dtype]:
        """The backbone's floating-point parameter dtype (what ``.to(dtype)`` set), None without such parameters."""
        param = next(self.model.parameters(), None)
        return param.dtype if param is not None and param.is_floating_point() else None

    def check_sample_args(
        self,
        batch_size: int,
        *,
        sampler: str = "ddpm",
        steps: Optional[int] = None,
        eta: float = 0.0,
        y: Optional[torch.Tensor] = None,
        guidance_scale: float = 1.0,
        **options: Any,
    ) -> tuple[Any, list[int], dict[str, Any]]:
        """Check :meth:`sample`'s arguments without sampling (a ``ValueError`` saying what is accepted);
        returns the sampler function, the timesteps it visits and its options."""
        if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        try:
            sampler_fn = SAMPLERS[sampler]
        except (KeyError, TypeError):
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}") from None
        if not math.isfinite(eta) or eta < 0:
            raise ValueError(f"eta must be a finite number >= 0, got {eta}")
        if not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale}")
        spacing = options.pop("spacing", DEFAULT_SPACING.get(sampler, "trailing"))
        accepted = inspect.signature(sampler_fn).parameters
        if eta != 0.0:
            options["eta"] = eta
        if sampler == "ddpm":
            options.setdefault("variance", self.variance)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(f"sampler {sampler!r} does not take option(s) {unknown}")
        self._conditioning_check(y, batch_size, guidance_scale)
        timesteps = timestep_schedule(self.num_timesteps, steps, spacing, self.alphas_cumprod)
        return sampler_fn, timesteps, options

    # --- training --------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Training loss: MSE between the network output and its objective's target at a uniform t,
        each example weighted by ``loss_weighting``."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor (B, *input_shape), got "
                             f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"batch has example shape {tuple(x.shape[1:])}, this GaussianDiffusion expects {self.input_shape}"
            )
        batch_size = x.shape[0]
        if batch_size == 0:
            raise ValueError("the batch is empty: x has shape (0, ...)")
        model_dtype = self._parameter_dtype()
        if model_dtype is not None and x.dtype != model_dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(f"x is {x.dtype} but the model is {model_dtype}; convert one to the other "
                             f"(x.to({model_dtype}))")
        y = as_labels(y)
        self._check_y(y, batch_size)
        if self.conditioner is not None and y is None:
            raise ValueError("this GaussianDiffusion has a conditioner: forward(x, y) needs the labels y")
        t = torch.randint(0, self.num_timesteps, (batch_size,), device=x.device)
        noise = torch.randn_like(x)
        x_t = self.perturb_x(x, t, noise)
        cond = self.conditioner(y) if self.conditioner is not None else None
        output = self._network(self._model_input(x_t, t), t, cond)
        target = objectives.training_target(
            self.objective,
            x if self.data_std == 1.0 else x / self.data_std,
            noise,
            self._coef("scaled_a", t, x),
            self._coef("scaled_s", t, x),
        )
        # Low-precision outputs (bf16 autocast) are compared in float32 at least.
        dtype = torch.promote_types(output.dtype, torch.float32)
        if self.loss_weighting == "none":
            return F.mse_loss(output.to(dtype), target.to(dtype))
        per_example = (output.to(dtype) - target.to(dtype)).square().flatten(1).mean(1)
        # The SNR of the data in units of data_std (the plain ᾱ/(1-ᾱ) for data_std 1).
        snr = objectives.snr(self.alphas_cumprod[t]) * self.data_std**2
        weight = objectives.min_snr_weight(self.objective, snr, self.min_snr_gamma).to(dtype)
        return (weight * per_example).mean()

    # --- likelihood ------------------------------------------------------------------------------

    @torch.no_grad()
    @_in_eval_mode
    def nll(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, **options: Any) -> torch.Tensor:
        """Negative log-likelihood bound in bits per dimension, one value per example (shape ``(B,)``),
        for 8-bit data scaled to [-1, 1]; ``options`` go to :func:`diffkit.likelihood.nll` (``steps``,
        ``batch_size``, ``generator``, ``progress``)."""
        return likelihood.nll(self, x, y=as_labels(y), **options)
