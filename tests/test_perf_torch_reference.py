"""The PyTorch side of the benchmark computes what dpljax computes (skipped without torch)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402

from benchmarks import torch_ref  # noqa: E402
from dpljax.models import HBV, hbv
from dpljax.models.hbv import Forcing  # noqa: E402
from dpljax.models.routing import route, unit_hydrograph  # noqa: E402


def test_torch_reference_matches_dpljax(forcing10y):
    prcp, tmean, pet = (a[:, :400] for a in forcing10y)
    b, nmul = prcp.shape[0], 3
    rng = np.random.default_rng(15)
    params = {k: rng.uniform(lo, hi, (b, nmul)) for k, (lo, hi) in hbv.BOUNDS.items()}
    ra, rb = rng.uniform(0, 2.9, b), rng.uniform(0, 6.5, b)
    with jax.enable_x64(True):
        q = HBV().simulate(params, Forcing(prcp, tmean, pet))[0]["q"]
        q = np.asarray(route(q, unit_hydrograph(ra, rb)))
    tp = {k: torch.from_numpy(v) for k, v in params.items()}
    qt = torch_ref.hbv(tp, *(torch.from_numpy(np.ascontiguousarray(a.T)) for a in (prcp, tmean, pet)), nmul)
    qt = torch_ref.route(qt, torch.from_numpy(ra), torch.from_numpy(rb)).T.numpy()
    np.testing.assert_allclose(qt, q, rtol=1e-9, atol=1e-12)
