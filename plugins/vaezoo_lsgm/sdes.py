"""The variance-preserving SDEs of LSGM (Vahdat, Kreis & Kautz, NeurIPS 2021), written from the paper.

Both are ``dz = -1/2 beta(t) z dt + sqrt(beta(t)) dw`` on ``t in [0, 1]``; they differ in the schedule. Their
perturbation kernel is ``q(z_t | z_0) = N(alpha_t z_0, var_t I)`` with ``alpha_t^2 + var_t = 1`` (hence "variance
preserving": N(0, I) stays N(0, I), which is what makes the mixed score exact at mixing 0), and
``d var / dt = beta(t) (1 - var)``.

- :class:`LinearVPSDE`: ``beta(t) = beta_min + (beta_max - beta_min) t`` (0.1 to 20 in the paper);
- :class:`GeometricVPSDE`: ``var_t = sigma2_min (sigma2_max / sigma2_min)^t``, so ``log var`` is linear in t.

Every schedule quantity is computed in float64 from ``t`` and returned in ``t``'s dtype: ``1 - var`` near t = 1 is
about 4e-5 for the linear schedule, where float32 would lose most of its digits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class VPSDE:
    """A variance-preserving SDE, defined by ``log alpha_t^2`` and its inverse; everything else follows."""

    def log_alpha2(self, t: Tensor) -> Tensor:
        """``log alpha_t^2`` (float64)."""
        raise NotImplementedError

    def beta(self, t: Tensor) -> Tensor:
        """``beta(t) = -d/dt log alpha_t^2`` (float64)."""
        raise NotImplementedError

    def time_of_var(self, var: Tensor) -> Tensor:
        """The inverse of :meth:`var` (float64 in, float64 out)."""
        raise NotImplementedError

    # -- derived -------------------------------------------------------------------------------------------------
    def var(self, t: Tensor) -> Tensor:
        return (-torch.expm1(self.log_alpha2(t.double()))).to(t.dtype)

    def std(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(self.log_alpha2(t.double()))).to(t.dtype)

    def mean_coef(self, t: Tensor) -> Tensor:
        """``alpha_t``, the kernel's mean is ``alpha_t z_0``."""
        return torch.exp(0.5 * self.log_alpha2(t.double())).to(t.dtype)

    def drift_coef(self, t: Tensor) -> Tensor:
        """``f(t)`` of the linear drift ``f(t) z``."""
        return (-0.5 * self.beta(t.double())).to(t.dtype)

    def diffusion2(self, t: Tensor) -> Tensor:
        """``g(t)^2``."""
        return self.beta(t.double()).to(t.dtype)

    def sample_kernel(self, z0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """``z_t = alpha_t z_0 + sqrt(var_t) noise`` for ``t`` of shape ``[B]``."""
        shape = (-1,) + (1,) * (z0.dim() - 1)
        return self.mean_coef(t).view(shape) * z0 + self.std(t).view(shape) * noise


class LinearVPSDE(VPSDE):
    """The VP SDE with ``beta`` linear in t (Song et al. 2021; LSGM's "vpsde")."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not 0 < beta_min < beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def log_alpha2(self, t: Tensor) -> Tensor:
        t = t.double()
        return -(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + (self.beta_max - self.beta_min) * t.double()

    def time_of_var(self, var: Tensor) -> Tensor:
        # solve 1/2 (b1 - b0) t^2 + b0 t = -log(1 - var) for the positive root
        integral = -torch.log1p(-var.double())
        slope = self.beta_max - self.beta_min
        return (torch.sqrt(self.beta_min**2 + 2 * slope * integral) - self.beta_min) / slope


class GeometricVPSDE(VPSDE):
    """The VP SDE whose variance grows geometrically from ``sigma2_min`` to ``sigma2_max`` (LSGM's "geometric
    VPSDE"): ``beta(t) = var_t log(sigma2_max / sigma2_min) / (1 - var_t)``."""

    def __init__(self, sigma2_min: float = 3e-5, sigma2_max: float = 0.999) -> None:
        if not 0 < sigma2_min < sigma2_max < 1:
            raise ValueError(f"need 0 < sigma2_min < sigma2_max < 1, got {sigma2_min}, {sigma2_max}")
        self.sigma2_min, self.sigma2_max = float(sigma2_min), float(sigma2_max)
        self._log_ratio = math.log(self.sigma2_max / self.sigma2_min)

    def _var(self, t: Tensor) -> Tensor:
        return self.sigma2_min * torch.exp(self._log_ratio * t.double())

    def log_alpha2(self, t: Tensor) -> Tensor:
        return torch.log1p(-self._var(t))

    def beta(self, t: Tensor) -> Tensor:
        var = self._var(t)
        return var * self._log_ratio / (1 - var)

    def time_of_var(self, var: Tensor) -> Tensor:
        return torch.log(var.double() / self.sigma2_min) / self._log_ratio


#: the SDEs a :class:`~vaezoo_lsgm.prior.ScorePrior` can be built with (its ``sde`` argument)
SDES = {"vp": LinearVPSDE, "geometric_vp": GeometricVPSDE}
