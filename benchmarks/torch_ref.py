"""A plain-PyTorch reference of the same dPL pipeline, for the throughput benchmark only.

Written from the equations of DESIGN.md ("HBV as this project implements it"), in the same
order as ``dpljax.models.hbv.step``; it is *not* a port of any published dPL code. It is the
straightforward way to write the model in PyTorch: a Python loop over days on ``(B, nmul)``
tensors, autograd through the whole loop, ``torch.nn.LSTM`` for g_z, ``torch.optim.Adam``.
Every tensor it creates follows the device of its inputs (CPU or CUDA).
``tests/test_perf_torch_reference.py`` checks it against ``dpljax`` (when torch is installed),
so both sides of the benchmark compute the same numbers.
"""
from __future__ import annotations

import math

import torch

BOUNDS = {  # same order and values as dpljax.models.hbv.BOUNDS
    "beta": (1.0, 6.0), "fc": (50.0, 1000.0), "k0": (0.05, 0.9), "k1": (0.01, 0.5),
    "k2": (0.001, 0.2), "lp": (0.2, 1.0), "perc": (0.0, 10.0), "uzl": (0.0, 100.0),
    "tt": (-2.5, 2.5), "cfmax": (0.5, 10.0), "cfr": (0.0, 0.1), "cwh": (0.0, 0.2),
    "betaet": (0.3, 5.0),
}
ROUTING_BOUNDS = {"route_a": (0.0, 2.9), "route_b": (0.0, 6.5)}
N_TAPS = 15


def hbv(p: dict, prcp, tmean, pet, nmul: int):
    """HBV over ``T`` days. ``p[name]``: ``(B, nmul)`` static or ``(T, B, nmul)`` dynamic;
    forcing ``(T, B)``. Returns the component-averaged runoff ``q`` ``(T, B)``."""
    n_t, b = prcp.shape
    s = torch.full((b, nmul), 0.001, dtype=prcp.dtype, device=prcp.device)
    snowpack = meltwater = sm = suz = slz = s
    qs = []
    for t in range(n_t):
        P = {k: (v[t] if v.dim() == 3 else v) for k, v in p.items()}
        pr = prcp[t, :, None]
        tm = tmean[t, :, None]
        pe = pet[t, :, None]
        rain = pr * (tm >= P["tt"]).to(pr.dtype)
        snow = pr - rain
        snowpack = snowpack + snow
        melt = torch.minimum(torch.clamp(P["cfmax"] * (tm - P["tt"]), min=0.0), snowpack)
        meltwater = meltwater + melt
        snowpack = snowpack - melt
        refreeze = torch.minimum(torch.clamp(P["cfr"] * P["cfmax"] * (P["tt"] - tm), min=0.0), meltwater)
        snowpack = snowpack + refreeze
        meltwater = meltwater - refreeze
        tosoil = torch.clamp(meltwater - P["cwh"] * snowpack, min=0.0)
        meltwater = meltwater - tosoil
        wet = torch.clamp((torch.clamp(sm, min=1e-6) / P["fc"]) ** P["beta"], 0.0, 1.0)
        infil = rain + tosoil
        recharge = infil * wet
        sm = sm + infil - recharge
        excess = torch.clamp(sm - P["fc"], min=0.0)
        sm = sm - excess
        ef = torch.clamp((torch.clamp(sm, min=1e-6) / (P["lp"] * P["fc"])) ** P["betaet"], 0.0, 1.0)
        et = torch.minimum(sm, pe * ef)
        sm = torch.clamp(sm - et, min=1e-5)
        suz = suz + recharge + excess
        perc = torch.minimum(suz, P["perc"])
        suz = suz - perc
        q0 = P["k0"] * torch.clamp(suz - P["uzl"], min=0.0)
        suz = suz - q0
        q1 = P["k1"] * suz
        suz = suz - q1
        slz = slz + perc
        q2 = P["k2"] * slz
        slz = slz - q2
        qs.append((q0 + q1 + q2).mean(dim=1))
    return torch.stack(qs)  # (T, B)


def route(q, route_a, route_b):
    """Gamma unit hydrograph (DESIGN.md step 7): ``q (T, B)``, parameters ``(B,)``."""
    alpha = torch.relu(route_a) + 0.1
    theta = torch.relu(route_b) + 0.5
    t = torch.arange(N_TAPS, dtype=q.dtype, device=q.device) + 0.5
    w = torch.softmax((alpha[:, None] - 1.0) * torch.log(t) - t / theta[:, None], dim=-1)  # (B, n)
    qp = torch.nn.functional.pad(q.T, (N_TAPS - 1, 0))  # (B, T + n - 1)
    n_t = q.shape[0]
    out = torch.zeros_like(q.T)
    for k in range(N_TAPS):
        out = out + w[:, k : k + 1] * qp[:, N_TAPS - 1 - k : N_TAPS - 1 - k + n_t]
    return out.T


def scale(raw, nmul: int, dynamic=()):
    """Raw network output -> physical parameters, the layout of dpljax.params.ParameterSpace.

    ``raw`` is ``(B, n_out)`` (static network) or ``(T, B, n_out)`` (sequence network)."""
    last = raw if raw.dim() == 2 else raw[-1]
    out = {}
    for i, (k, (lo, hi)) in enumerate(BOUNDS.items()):
        src = raw if (k in dynamic and raw.dim() == 3) else last
        out[k] = lo + torch.sigmoid(src[..., i * nmul : (i + 1) * nmul]) * (hi - lo)
    off = len(BOUNDS) * nmul
    rout = {k: lo + torch.sigmoid(last[:, off + j]) * (hi - lo)
            for j, (k, (lo, hi)) in enumerate(ROUTING_BOUNDS.items())}
    return out, rout


def _masked_rmse(pred, obs):
    mask = torch.isfinite(obs)
    d = torch.where(mask, pred, torch.zeros_like(pred)) - torch.where(mask, obs, torch.zeros_like(obs))
    return torch.sqrt((d ** 2).sum() / mask.sum().clamp(min=1) + 1e-12)


def rmse_combined(pred, obs, alpha: float = 0.25):
    f = lambda q: torch.log10(torch.sqrt(torch.clamp(q, min=0.0) + 1e-6) + 0.1)
    obs_t = torch.where(torch.isfinite(obs), f(torch.nan_to_num(obs)), obs)
    return (1 - alpha) * _masked_rmse(pred, obs) + alpha * _masked_rmse(f(pred), obs_t)


class MLP(torch.nn.Module):
    def __init__(self, n_static: int, n_out: int, hidden: int = 256):
        super().__init__()
        self.l1 = torch.nn.Linear(n_static, hidden)
        self.head = torch.nn.Linear(hidden, n_out)

    def forward(self, x_dyn, x_static):  # -> (B, n_out)
        return self.head(torch.relu(self.l1(x_static)))


class LSTMNet(torch.nn.Module):
    """Linear+ReLU input layer, one LSTM layer, dropout, linear head (as dpljax.nets.LSTM)."""

    def __init__(self, n_dyn: int, n_static: int, n_out: int, hidden: int, dropout: float = 0.5):
        super().__init__()
        self.inp = torch.nn.Linear(n_dyn + n_static, hidden)
        self.lstm = torch.nn.LSTM(hidden, hidden)
        self.drop = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(hidden, n_out)

    def forward(self, x_dyn, x_static):  # x_dyn (T, B, n) -> (T, B, n_out)
        t = x_dyn.shape[0]
        x = torch.cat([x_dyn, x_static[None].expand(t, -1, -1)], dim=-1)
        h, _ = self.lstm(torch.relu(self.inp(x)))
        return self.head(self.drop(h))


def make_step(net, nmul: int, dynamic, warmup: int, lr: float = 1e-3):
    """One training step: forward, loss after the warm-up, backward, Adam update."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    def step(x_dyn, x_static, forcing, obs):
        opt.zero_grad(set_to_none=True)
        raw = net(x_dyn, x_static)
        p, r = scale(raw, nmul, dynamic)
        q = hbv(p, forcing[..., 0], forcing[..., 1], forcing[..., 2], nmul)
        q = route(q, r["route_a"], r["route_b"])
        loss = rmse_combined(q[warmup:], obs[warmup:])
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def hbv_loss(raw, forcing, obs, nmul: int):
    """HBV alone: RMSE of the component-averaged runoff, ``raw (B, 13 * nmul)``."""
    p, _ = scale(torch.cat([raw, raw.new_zeros(raw.shape[0], 2)], dim=1), nmul)
    q = hbv(p, forcing[..., 0], forcing[..., 1], forcing[..., 2], nmul)
    return torch.sqrt(((q - obs) ** 2).mean())


def lstm_flops(b: int, t: int, n_in: int, hidden: int, n_out: int) -> float:
    """Matmul FLOPs of the g_z LSTM, forward + backward (backward = 2 x forward)."""
    h = hidden
    fwd = 2 * b * t * (n_in * h + h * 4 * h + h * 4 * h + h * n_out)
    return 3.0 * fwd


__all__ = ["hbv", "route", "scale", "rmse_combined", "MLP", "LSTMNet", "make_step", "hbv_loss",
           "lstm_flops", "math"]
