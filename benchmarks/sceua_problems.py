"""Duan et al. (1992)'s global-optimisation test functions, in JAX and in NumPy (one body,
written against an array namespace ``xp``), with their boxes and known minima.

Goldstein-Price (n=2), Rosenbrock (n=2, and n=10 as a harder case), six-hump camel-back
(n=2), Hartman-6 (n=6), Shekel-5/7/10 (n=4). Constants from Dixon & Szegö (1978), as used by
Duan, Sorooshian & Gupta (1992), WRR 28(4), Table 1.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


def goldstein_price(x, xp=np):
    x1, x2 = x[0], x[1]
    a = 1 + (x1 + x2 + 1) ** 2 * (19 - 14 * x1 + 3 * x1**2 - 14 * x2 + 6 * x1 * x2 + 3 * x2**2)
    b = 30 + (2 * x1 - 3 * x2) ** 2 * (18 - 32 * x1 + 12 * x1**2 + 48 * x2 - 36 * x1 * x2 + 27 * x2**2)
    return a * b


def rosenbrock(x, xp=np):
    return xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def six_hump_camel(x, xp=np):
    x1, x2 = x[0], x[1]
    return (4 - 2.1 * x1**2 + x1**4 / 3) * x1**2 + x1 * x2 + (-4 + 4 * x2**2) * x2**2


_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                  [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H6_C = np.array([1.0, 1.2, 3.0, 3.2])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])


def hartman6(x, xp=np):
    a, c, p = xp.asarray(_H6_A, x.dtype), xp.asarray(_H6_C, x.dtype), xp.asarray(_H6_P, x.dtype)
    return -xp.sum(c * xp.exp(-xp.sum(a * (x[None, :] - p) ** 2, axis=1)))


_SHEKEL_A = np.array([[4, 4, 4, 4], [1, 1, 1, 1], [8, 8, 8, 8], [6, 6, 6, 6], [3, 7, 3, 7],
                      [2, 9, 2, 9], [5, 5, 3, 3], [8, 1, 8, 1], [6, 2, 6, 2], [7, 3.6, 7, 3.6]],
                     dtype=float)
_SHEKEL_C = np.array([0.1, 0.2, 0.2, 0.4, 0.4, 0.6, 0.3, 0.7, 0.5, 0.5])


def shekel(x, xp=np, m=10):
    a, c = xp.asarray(_SHEKEL_A[:m], x.dtype), xp.asarray(_SHEKEL_C[:m], x.dtype)
    return -xp.sum(1.0 / (xp.sum((x[None, :] - a) ** 2, axis=1) + c))


class Problem(NamedTuple):
    name: str
    fun: Callable  # fun(x, xp) -> scalar
    lower: tuple
    upper: tuple
    fmin: float

    def jax(self):
        import jax.numpy as jnp

        return lambda x: self.fun(x, jnp)

    def numpy(self):
        return lambda x: self.fun(np.asarray(x, dtype=float), np)

    def solved(self, f, rtol: float = 1e-3):
        """Reached the global minimum: ``|f - fmin| <= rtol * max(1, |fmin|)``."""
        return np.abs(np.asarray(f) - self.fmin) <= rtol * max(1.0, abs(self.fmin))


PROBLEMS = {
    "goldstein_price": Problem("goldstein_price", goldstein_price, (-2.0,) * 2, (2.0,) * 2, 3.0),
    "rosenbrock": Problem("rosenbrock", rosenbrock, (-5.0,) * 2, (5.0,) * 2, 0.0),
    "six_hump_camel": Problem("six_hump_camel", six_hump_camel, (-5.0,) * 2, (5.0,) * 2, -1.0316285),
    "hartman6": Problem("hartman6", hartman6, (0.0,) * 6, (1.0,) * 6, -3.3223680),
    "shekel5": Problem("shekel5", lambda x, xp=np: shekel(x, xp, 5), (0.0,) * 4, (10.0,) * 4, -10.1531997),
    "shekel7": Problem("shekel7", lambda x, xp=np: shekel(x, xp, 7), (0.0,) * 4, (10.0,) * 4, -10.4029406),
    "shekel10": Problem("shekel10", lambda x, xp=np: shekel(x, xp, 10), (0.0,) * 4, (10.0,) * 4, -10.5364098),
}
ROSENBROCK10 = Problem("rosenbrock10", rosenbrock, (-5.0,) * 10, (5.0,) * 10, 0.0)
