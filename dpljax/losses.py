"""Masked training losses on routed streamflow; NaN observations never contribute.

Every loss takes ``(pred (B, T), obs (B, T), obs_std (B,))`` and returns a scalar pooled over
the batch; ``loss.per_basin(...)`` returns each basin's own loss ``(B,)`` (calibration). Missing
observations are masked with the "double where": NaNs are replaced *before* any arithmetic,
so neither the value nor the gradient can see them.
"""
from __future__ import annotations

import jax.numpy as jnp

from .registry import Registry

LOSSES: Registry = Registry("loss")


def register_loss(name: str):
    """Class decorator: ``@register_loss("nse_batch")`` adds a loss to :data:`LOSSES`."""
    return LOSSES.register(name)


def _masked(pred, obs):
    mask = jnp.isfinite(obs)
    obs0 = jnp.where(mask, obs, 0.0)
    pred0 = jnp.where(mask, pred, 0.0)
    return pred0, obs0, mask


def _safe_sqrt(x, eps=1e-12):
    """sqrt with a finite gradient at 0; NaN stays NaN (a NaN simulation must never score 0,
    the best possible loss)."""
    safe = x > eps
    return jnp.where(safe, jnp.sqrt(jnp.where(safe, x, 1.0)), jnp.where(jnp.isnan(x), jnp.nan, 0.0))


def masked_rmse(pred, obs, axis=None):
    """RMSE over the valid points, pooled (``axis=None``) or along ``axis`` (e.g. per basin)."""
    pred0, obs0, mask = _masked(pred, obs)
    n = jnp.maximum(mask.sum(axis=axis), 1)
    return _safe_sqrt(jnp.sum((pred0 - obs0) ** 2, axis=axis) / n)


def log_sqrt_q(q):
    """``log10(sqrt(q + 1e-6) + 0.1)``: compresses high flows so low flows count."""
    return jnp.log10(jnp.sqrt(jnp.maximum(q, 0.0) + 1e-6) + 0.1)


@register_loss("rmse_combined")
class RMSECombined:
    """``(1 - alpha) RMSE(q) + alpha RMSE(log10(sqrt(q + 1e-6) + 0.1))`` (alpha = 0.25)."""

    def __init__(self, alpha: float = 0.25):
        self.alpha = float(alpha)

    def __call__(self, pred, obs, obs_std=None, *, axis=None):
        mask = jnp.isfinite(obs)
        obs_t = jnp.where(mask, log_sqrt_q(jnp.where(mask, obs, 0.0)), jnp.nan)
        return (1 - self.alpha) * masked_rmse(pred, obs, axis) + \
            self.alpha * masked_rmse(log_sqrt_q(pred), obs_t, axis)

    def per_basin(self, pred, obs, obs_std=None):
        """The loss of each basin on its own, ``(B,)``: what per-basin calibration minimises
        (the sum has each basin's gradient in that basin's parameters alone)."""
        return self(pred, obs, obs_std, axis=-1)


@register_loss("nse_batch")
class NSEBatch:
    """``mean((qhat - q)^2 / (sigma_basin + eps)^2)`` over valid points (eps = 0.1 mm/d).

    Equivalent to 1 - NSE per basin, pooled, without letting dry basins dominate.
    """

    def __init__(self, eps: float = 0.1):
        self.eps = float(eps)

    def __call__(self, pred, obs, obs_std, *, axis=None):
        pred0, obs0, mask = _masked(pred, obs)
        w = 1.0 / (obs_std[:, None] + self.eps) ** 2
        return jnp.sum(w * (pred0 - obs0) ** 2, axis=axis) / jnp.maximum(mask.sum(axis=axis), 1)

    def per_basin(self, pred, obs, obs_std):
        """The loss of each basin on its own, ``(B,)``."""
        return self(pred, obs, obs_std, axis=-1)
