"""Locality-aware Correspondence Correction (LCC) of LoCo (Xing et al., §III-C, Eq. 3-6, Alg. 1).

A training-only contrastive loss on the unimodal encoder outputs ``F_v, F_a``
(``[B, D, T]``, what :meth:`TwoStreamStem.encode` returns). Both streams are
projected to D/2, the ``M = B T`` segments of the batch are compared with
every segment of the other modality, and the soft target ``G`` (Eq. 5) is a
per-video Gaussian in the time gap (Eq. 4), zero across videos:

    G_hat_ij = exp(-(i - j)^2 / (4 sigma^2)) / (sigma sqrt(2 pi))
    L_v2a = -mean_i sum_j G_ij log softmax_j(<v_i, a_j> / tau),   L = (L_v2a + L_a2v) / 2

Choices the paper leaves open (LOCO.md §4):

* A4: each projection is an MLP ``Linear(D, D) -> ReLU -> Linear(D, D/2)``
  with biases (Table VII's 0.78M / 0.20 G); projections are L2-normalised, so
  ``<.,.>`` is cosine similarity (ALBEF); ``tau`` is learnable, starts at 0.07
  and is clamped in place to [0.001, 0.5] at every forward (ALBEF); the loss
  is the mean over rows i (Algorithm 1), not Eq. 3's sum.
* A5: with ``mask_padding=True`` (default) only valid segments take part:
  padded rows leave the mean, padded columns leave every softmax denominator,
  and ``G`` is restricted to valid x valid (the same as using
  ``G_hat(T_b)`` for a video of ``T_b`` steps). ``mask_padding=False`` is
  Algorithm 1 literally; padded projections are zero vectors there (cosine 0
  with everything), as the padded ``F`` rows are.
* A6: ``sigma`` is one raw learnable scalar (init 1.0, no reparametrisation
  that would speed up its drift to the degenerate ``sigma >> T``), clamped to
  ``>= 0.05`` in the forward pass only. For ``fixed_gaussian`` it is a buffer
  holding ``sigma_init`` (1.0 in Table IV).
* A14: row ``i`` of the ``M x M`` matrices is video ``i // T``, step ``i % T``
  (the paper's sentence swaps the two; Eq. 5 has it right).
* A13: ``softened`` is ``(1 - a') I + a' / (M - 1)`` over the whole M x M
  matrix as the paper writes it (a' = 0.2); with masking M counts valid segments.

``G`` is never materialised in the loss: only its per-video blocks (plus the
uniform part of ``softened``) are used, which saves two M x M matrices per
direction. :func:`correspondence_target` builds the full matrix for checks.

Also here: :func:`csm_std`, the "Mean of std" statistic of the audio-visual
cross-similarity matrix (§IV-E, Fig. 3), A12: cosine on ``F``, population
std, valid steps only.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TARGETS = ("diagonal", "softened", "fixed_gaussian", "gaussian")
TAU_RANGE = (0.001, 0.5)
SIGMA_MIN = 0.05
SOFTEN_ALPHA = 0.2


def _as_steps_mask(mask: Tensor) -> Tensor:
    """``[B, T]`` bool from a ``[B, T]`` or ``[B, 1, T]`` mask."""
    return (mask[:, 0] if mask.dim() == 3 else mask).bool()


def gaussian_prior(length: int, sigma: float | Tensor) -> Tensor:
    """Eq. 4: ``[T, T]`` with ``exp(-(i - j)^2 / (4 sigma^2)) / (sigma sqrt(2 pi))``.

    ``sigma`` may be a tensor (differentiable; its device and dtype are used).
    Rows are not normalised: interior row sums are about sqrt(2).
    """
    sigma = sigma if isinstance(sigma, Tensor) else torch.tensor(float(sigma))
    idx = torch.arange(length, device=sigma.device, dtype=sigma.dtype)
    # d(i, j) = |i - j| / sqrt(2) is the distance to the diagonal, mu = 0
    dist = (idx[:, None] - idx[None, :]) / math.sqrt(2.0)
    return torch.exp(-dist ** 2 / (2.0 * sigma ** 2)) / (sigma * math.sqrt(2.0 * math.pi))


def _block_and_uniform(length: int, sigma: Tensor, kind: str, n_valid: Tensor,
                       smoothing: float) -> tuple[Tensor, Tensor | None]:
    """The target as a per-video ``[T, T]`` block plus a weight shared by every valid pair."""
    if kind in ("gaussian", "fixed_gaussian"):
        return gaussian_prior(length, sigma), None
    eye = torch.eye(length, device=sigma.device, dtype=sigma.dtype)
    if kind == "diagonal":
        return eye, None
    if kind == "softened":
        return (1.0 - smoothing) * eye, smoothing / (n_valid.to(sigma.dtype) - 1.0).clamp(min=1.0)
    raise ValueError(f"LCC target must be one of {TARGETS}, got {kind!r}")


def correspondence_target(mask: Tensor, sigma: float | Tensor = 1.0, kind: str = "gaussian",
                          smoothing: float = SOFTEN_ALPHA) -> Tensor:
    """Eq. 5 (and Table IV's variants) as a full ``[M, M]`` matrix, ``M = B T``.

    ``mask``: ``[B, T]`` (or ``[B, 1, T]``) bool; all True is Algorithm 1's
    unmasked target, otherwise rows and columns of padded segments are zero
    (and ``softened`` counts valid segments only). Row ``i`` is video
    ``i // T``, step ``i % T``; blocks of different videos are zero.
    """
    valid = _as_steps_mask(mask)
    batch, length = valid.shape
    sigma = sigma if isinstance(sigma, Tensor) else torch.tensor(float(sigma))
    flat = valid.reshape(-1).to(sigma.dtype)
    block, uniform = _block_and_uniform(length, sigma, kind, valid.sum(), smoothing)
    target = torch.block_diag(*([block] * batch))
    if uniform is not None:
        target = target + uniform
    return target * flat[:, None] * flat[None, :]


def _direction_loss(logits: Tensor, valid: Tensor, block: Tensor,
                    uniform: Tensor | None) -> Tensor:
    """``-mean_i sum_j G_ij log softmax_j(logits_ij)`` over valid rows, valid columns only.

    ``logits [M, M]``, ``valid [B, T]``; ``G`` = ``block`` on each video's
    diagonal block + ``uniform`` everywhere (restricted to valid x valid).
    """
    batch, length = valid.shape
    cols = valid.reshape(1, -1)
    # a finite floor rather than -inf: no NaN even for a batch without valid steps
    logp = logits.masked_fill(~cols, torch.finfo(logits.dtype).min).log_softmax(dim=-1)
    logp = logp.masked_fill(~cols, 0.0)     # before weighting: never 0 * floor
    own = torch.diagonal(logp.view(batch, length, batch, length), dim1=0, dim2=2)  # [T, T, B]
    rows = (own * block[:, :, None]).sum(dim=1).transpose(0, 1).reshape(-1)     # [M]
    if uniform is not None:
        rows = rows + uniform * logp.sum(dim=-1)
    keep = valid.reshape(-1).to(rows.dtype)
    return -(rows * keep).sum() / keep.sum().clamp(min=1.0)


def correspondence_loss(v: Tensor, a: Tensor, mask: Tensor, tau: Tensor | float,
                        sigma: Tensor | float = 1.0, kind: str = "gaussian",
                        mask_padding: bool = True, smoothing: float = SOFTEN_ALPHA
                        ) -> tuple[Tensor, Tensor, Tensor]:
    """Eq. 3-6 on already projected (and normalised) segments.

    ``v``, ``a``: ``[B, T, P]``; ``mask``: ``[B, T]`` or ``[B, 1, T]`` bool.
    Returns ``(L_LCC, L_v2a, L_a2v)`` scalars.
    """
    valid = _as_steps_mask(mask)
    if not mask_padding:
        valid = torch.ones_like(valid)
    batch, length, dim = v.shape
    tau = tau if isinstance(tau, Tensor) else v.new_tensor(float(tau))
    sigma = sigma if isinstance(sigma, Tensor) else v.new_tensor(float(sigma))
    block, uniform = _block_and_uniform(length, sigma.to(v.dtype), kind, valid.sum(), smoothing)
    sim = v.reshape(-1, dim) @ a.reshape(-1, dim).T / tau    # [M, M], rows: visual
    v2a = _direction_loss(sim, valid, block, uniform)
    a2v = _direction_loss(sim.T, valid, block, uniform)     # G is symmetric
    return 0.5 * (v2a + a2v), v2a, a2v


def _projection(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


class LCCHead(nn.Module):
    """Projections, temperature and Gaussian width of LCC.

    ``project(f_v [B, D, T], f_a [B, D, T], mask [B, 1, T] or None)`` returns
    L2-normalised ``[B, T, P]`` projections (zero at masked steps).
    ``target`` is one of :data:`TARGETS`; ``sigma`` is a parameter for
    ``"gaussian"`` and a buffer otherwise (unused by ``diagonal`` and
    ``softened``), so the state-dict keys are ``proj_V.*, proj_A.*, tau, sigma``
    whatever the target.
    """

    def __init__(self, in_dim: int = 512, proj_dim: int = 256, hidden_dim: int | None = None,
                 target: str = "gaussian", tau_init: float = 0.07, sigma_init: float = 1.0,
                 smoothing: float = SOFTEN_ALPHA) -> None:
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"LCC target must be one of {TARGETS}, got {target!r}")
        hidden_dim = in_dim if hidden_dim is None else hidden_dim
        self.target, self.smoothing = target, smoothing
        self.proj_V = _projection(in_dim, hidden_dim, proj_dim)
        self.proj_A = _projection(in_dim, hidden_dim, proj_dim)
        self.tau = nn.Parameter(torch.tensor(float(tau_init)))
        if target == "gaussian":
            self.sigma = nn.Parameter(torch.tensor(float(sigma_init)))
        else:
            self.register_buffer("sigma", torch.tensor(float(sigma_init)))

    def project(self, f_v: Tensor, f_a: Tensor, mask: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        v = F.normalize(self.proj_V(f_v.transpose(1, 2)), dim=-1)
        a = F.normalize(self.proj_A(f_a.transpose(1, 2)), dim=-1)
        if mask is not None:
            keep = _as_steps_mask(mask)[..., None].to(v.dtype)
            v, a = v * keep, a * keep
        return v, a

    def temperature(self) -> Tensor:
        """tau after the in-place clamp to :data:`TAU_RANGE` (ALBEF)."""
        with torch.no_grad():
            self.tau.clamp_(*TAU_RANGE)
        return self.tau

    def width(self) -> Tensor:
        """sigma as used by the loss, at least :data:`SIGMA_MIN`."""
        return self.sigma.clamp(min=SIGMA_MIN)


def lcc_loss(f_v: Tensor, f_a: Tensor, mask: Tensor, head: LCCHead,
             mask_padding: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 6 on encoder outputs ``f_v``, ``f_a`` ``[B, D, T]``; ``mask [B, 1, T]`` or ``[B, T]``.

    Returns ``(L_LCC, {"v2a", "a2v", "tau", "sigma"})``; the diagnostics are
    detached scalar tensors (tau after its clamp, sigma as used).
    """
    v, a = head.project(f_v, f_a, mask)
    tau, sigma = head.temperature(), head.width()
    loss, v2a, a2v = correspondence_loss(v, a, mask, tau, sigma, head.target, mask_padding,
                                         head.smoothing)
    diagnostics = {"v2a": v2a.detach(), "a2v": a2v.detach(), "tau": tau.detach().clone(),
                   "sigma": sigma.detach()}
    return loss, diagnostics


def csm_std(f_v: Tensor, f_a: Tensor, mask: Tensor | None = None) -> Tensor:
    """Population std of each video's cross-similarity matrix, ``[B]``.

    ``CSM_ij = cos(f_a[:, :, i], f_v[:, :, j])`` over the valid steps ``i, j`` of
    the video (``f_v``, ``f_a``: ``[B, D, T]``; ``mask``: ``[B, T]`` or
    ``[B, 1, T]``, None: all valid).
    """
    v = F.normalize(f_v, dim=1)
    a = F.normalize(f_a, dim=1)
    sim = a.transpose(1, 2) @ v                               # [B, T_a, T_v]
    if mask is None:
        return sim.flatten(1).std(dim=1, correction=0)
    keep = _as_steps_mask(mask).to(sim.dtype)
    pairs = keep[:, :, None] * keep[:, None, :]
    count = pairs.sum(dim=(1, 2)).clamp(min=1.0)
    mean = (sim * pairs).sum(dim=(1, 2)) / count
    var = (((sim - mean[:, None, None]) ** 2) * pairs).sum(dim=(1, 2)) / count
    return var.sqrt()


def csm_mean_std(f_v: Tensor, f_a: Tensor, mask: Tensor | None = None) -> Tensor:
    """The paper's "Mean of std": :func:`csm_std` averaged over the videos of the batch."""
    return csm_std(f_v, f_a, mask).mean()
