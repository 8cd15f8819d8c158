"""Shuffled Complex Evolution (SCE-UA), pure JAX: jit-able, vmap-able, resumable.

References:
  Duan, Q., Sorooshian, S. and Gupta, V. (1992), Effective and efficient global optimization
  for conceptual rainfall-runoff models, Water Resour. Res. 28(4), 1015-1031.
  Duan, Q., Sorooshian, S. and Gupta, V. K. (1994), Optimal use of the SCE-UA global
  optimization method for calibrating watershed models, J. Hydrol. 158, 265-284.

The algorithm (minimise ``fun`` over the box ``[lower, upper]`` of ``n`` dimensions):

1. *Population*: ``s = p * m`` points drawn uniformly in the box (``p`` complexes of
   ``m = 2n + 1`` points), evaluated and sorted by objective value.
2. *Partition*: complex ``k`` (0-based) receives the points of rank ``k, k + p, k + 2p, ...``
   (each complex is again sorted).
3. *Competitive complex evolution* (CCE), ``beta = 2n + 1`` steps per complex per shuffle;
   one step (``alpha = 1``):

   a. draw a sub-complex of ``q = n + 1`` distinct points of the complex with the triangular
      probability ``rho_i = 2 (m + 1 - i) / (m (m + 1))`` (rank ``i = 1`` is the best point),
      sequentially without replacement;
   b. reflect the sub-complex's worst point ``w`` through the centroid ``g`` of the others:
      ``r = 2 g - w``; if ``r`` leaves the box, draw instead a random point uniformly in the
      smallest box containing the complex (Duan et al. 1994; ``random_in="box"``: the whole
      box, as in Duan's MATLAB code and spotpy); evaluate it;
   c. if ``f(r) < f(w)`` it replaces ``w``; otherwise the contraction ``c = (g + w) / 2``
      is evaluated and replaces ``w`` if ``f(c) < f(w)``; otherwise a random point (as in
      b) replaces ``w`` whatever its value;
   d. the complex is sorted again.
4. *Shuffle*: the complexes are merged and sorted, the best point recorded (the trace), and
   the stopping rules checked; then back to 2.

Stopping rules (checked after the initial population and after every shuffling loop, in
this order): the *budget* (fewer than ``p`` evaluations left, i.e. not one more evolution
round; the budget is never exceeded); the *population gathered* (normalised geometric range
``exp(mean_j log((max_j - min_j) / (upper_j - lower_j))) < peps``); *no improvement*
(after at least ``kstop`` loops, ``100 |F_t - F_{t-kstop+1}| / mean(|F_{t-kstop+1..t}|)
< pcento``, ``F_t`` the best value after loop ``t``: ``pcento`` is in percent, as in
Duan's code and spotpy); and ``max_loops``.

Vectorisation and evaluation count. Between two shuffles the complexes are independent, so
they evolve side by side (``vmap`` over complexes), each as a small state machine whose next
needed evaluation is a reflection (or its random replacement), a contraction or a random
point. In every *round* each complex that has not finished its ``beta`` steps evaluates
exactly the one point its own CCE needs next; so a round evaluates ``p`` points of which
only those of finished complexes (waiting for the shuffle) are wasted, and those are not
counted. ``n_evals`` counts only evaluations the algorithm makes; ``n_computed`` counts
every ``fun`` evaluation the (unbatched) program computes, so ``1 - n_evals / n_computed`` is
the compute wasted by the vectorisation. The run is one loop over rounds, and a problem
shuffles in the round its own complexes finish: under an outer ``jax.vmap`` over problems
(basins) no problem waits for another's loop to end, so every round evaluates a useful point
for nearly every problem (measured on 531 basins, ``benchmarks/README.md``); problems wait
only at the end of a :func:`run` (until the slowest has done its ``n_loops``), which
``run(..., n_rounds=k)`` avoids.

Non-finite objective values: treated as ``+inf`` inside the algorithm (so such points are
the worst and are replaced first) and counted in ``n_nonfinite``. When the initial
population is evaluated outside any transformation (not traced) and *every* value is
non-finite, :func:`init` raises, since the search would be blind; under ``jit`` or ``vmap``
check ``n_nonfinite`` / ``fun`` of the result (the calibration runner raises naming the
basin).

Randomness: every draw derives from ``key``; the same key gives the same result, and
:func:`run` in chunks gives bit for bit what one :func:`run` gives.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

#: Why a run stopped, indexed by :attr:`SCEState.stop` (0: still running).
STOP_REASONS = ("running", "budget", "gathered", "no_improvement", "max_loops")
RUNNING, BUDGET, GATHERED, NO_IMPROVEMENT, MAX_LOOPS = range(5)

# Phases of a complex's CCE step (what its next evaluation is).
_REFLECT, _CONTRACT, _RANDOM, _DONE = 0, 1, 2, 3


class SCEState(NamedTuple):
    """Everything a run needs to continue, as arrays (a PyTree: checkpoint it, vmap it).

    Shapes (for one problem; an outer ``vmap`` adds a leading axis to each): ``n``
    dimensions, ``p`` complexes of ``m`` points, ``L = max_loops``.
    """

    x: Any            # (p*m, n) population, sorted by objective value (best first)
    f: Any            # (p*m,) objective values (non-finite -> +inf)
    key: Any          # PRNG key for the next loop
    n_evals: Any      # () int32, evaluations the algorithm made (the budget's count)
    n_computed: Any   # () int32, evaluations computed by the vectorised program
    n_nonfinite: Any  # () int32, evaluations that returned NaN or +-inf
    loop: Any         # () int32, shuffling loops done
    trace: Any        # (L + 1,) best value after the initial population (0) and loop t (t)
    loop_rounds: Any  # (L,) evaluation rounds in loop t + 1 (waste accounting)
    gnrng: Any        # () normalised geometric range of the population
    stop: Any         # () int32, index into STOP_REASONS (0: running)
    lower: Any        # (n,) box
    upper: Any        # (n,)
    max_evals: Any    # () int32 budget
    n_steps: Any      # () int32, beta: evolution steps per complex per loop
    kstop: Any        # () int32
    pcento: Any       # () float, percent
    peps: Any         # () float
    random_box: Any   # () bool: random points in the whole box (True) or the complex's box
    n_complexes: Any  # (p,) zeros: carries p in its shape (so run() needs no options)
    # Within a shuffling loop (``in_loop``): ``x``/``f`` hold the complexes one after another
    # (complex k: rows k*m .. k*m + m - 1, each sorted) and each complex's CCE state machine.
    in_loop: Any      # () bool
    loop_key: Any     # PRNG key of the current loop's evolution rounds
    round: Any        # () int32, evaluation rounds done in the current loop
    phase: Any        # (p,) int32: _REFLECT, _CONTRACT, _RANDOM or _DONE
    cce_step: Any     # (p,) int32, CCE steps completed this loop
    sub: Any          # (p, q) ranks of each complex's current sub-complex
    centroid: Any     # (p, n) centroid of the sub-complex without its worst point
    f_worst: Any      # (p,) objective value of the sub-complex's worst point


class SCEResult(NamedTuple):
    """What :func:`sce_ua` returns (one problem; an outer ``vmap`` adds a leading axis)."""

    x: Any            # (n,) best point found
    fun: Any          # () its objective value
    n_evals: Any      # () evaluations made (<= max_evals)
    n_computed: Any   # () evaluations computed (>= n_evals; the difference is waste)
    n_nonfinite: Any  # () evaluations that were NaN / inf
    n_loops: Any      # () shuffling loops done
    trace: Any        # (L + 1,) best value after the population and each loop; inf past
    n_trace: Any      # () valid entries of ``trace`` (n_loops + 1)
    stop: Any         # () int32 code, see STOP_REASONS / stop_reason()
    gnrng: Any        # () final normalised geometric range
    state: SCEState   # the final state (resumable with run(), e.g. with a larger budget)


def stop_reason(code) -> str:
    """The name of a stop code (``"budget"``, ``"gathered"``, ``"no_improvement"``, ...)."""
    return STOP_REASONS[int(code)]


def _is_traced(*xs) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in xs)


def n_max_loops(max_evals: int, n_dim: int, n_complexes: int, n_steps: int | None = None,
                n_points: int | None = None) -> int:
    """An upper bound on the shuffling loops a budget allows: each loop but the last makes at
    least one evaluation per complex and step (so the trace never overflows)."""
    m = n_points or 2 * n_dim + 1
    beta = n_steps or m
    s = n_complexes * m
    return max(1, (int(max_evals) - s) // (n_complexes * beta) + 1)


def _check_inputs(lower, upper, max_evals, n_complexes, n_points, n_steps):
    if not _is_traced(lower, upper):
        lo, hi = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
        if lo.ndim != 1 or lo.shape != hi.shape or lo.size == 0:
            raise ValueError(f"lower and upper must be 1-D of the same length >= 1, got shapes "
                             f"{lo.shape} and {hi.shape}")
        for name, v in (("lower", lo), ("upper", hi)):
            bad = np.flatnonzero(~np.isfinite(v))
            if bad.size:
                raise ValueError(f"{name} bound is not finite at index {int(bad[0])} "
                                 f"({v[bad[0]]}); SCE-UA searches a finite box")
        bad = np.flatnonzero(~(lo < hi))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"lower >= upper at index {i} ({lo[i]} >= {hi[i]}); every "
                             f"dimension needs lower < upper (fix a parameter by leaving it "
                             f"out of the search)")
    n = int(np.shape(lower)[-1])
    if int(n_complexes) < 1:
        raise ValueError(f"n_complexes must be >= 1, got {n_complexes}")
    if n_points < n + 1:
        raise ValueError(f"n_points (points per complex) must be >= n + 1 = {n + 1}, got {n_points}")
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    s = int(n_complexes) * n_points
    if int(max_evals) < s:
        raise ValueError(f"max_evals={max_evals} is smaller than one population: {n_complexes} "
                         f"complexes x {n_points} points (2n+1, n={n}) = {s} evaluations; raise "
                         f"max_evals to at least {s} (a useful budget is many times that) or "
                         f"lower n_complexes")


def _sanitize(f):
    f = jnp.asarray(f)
    ok = jnp.isfinite(f)
    return jnp.where(ok, f, jnp.inf), jnp.sum(~ok).astype(jnp.int32)


def _gnrng(x, lower, upper):
    span = (jnp.max(x, axis=0) - jnp.min(x, axis=0)) / (upper - lower)
    return jnp.exp(jnp.mean(jnp.log(span)))


def init(fun: Callable, lower, upper, *, key, max_evals: int, n_complexes: int = 2,
         n_points: int | None = None, n_steps: int | None = None, kstop: int = 10,
         pcento: float = 0.1, peps: float = 1e-3, max_loops: int | None = None,
         random_in: str = "complex") -> SCEState:
    """Draw and evaluate the initial population; the state :func:`run` advances.

    Args:
      fun: ``fun(x (n,)) -> scalar`` to minimise (a JAX function; it is vmapped).
      lower, upper: ``(n,)`` bounds of the box (finite, ``lower < upper``).
      key: a JAX PRNG key.
      max_evals: the evaluation budget (a Python int; it sizes the trace).
      n_complexes: ``p`` (Duan et al. 1994: 2..20, problem-dependent; more is more robust and
        costs more per loop).
      n_points: points per complex ``m`` (default ``2n + 1``).
      n_steps: evolution steps per complex per loop, ``beta`` (default ``2n + 1``).
      kstop, pcento, peps: the stopping rules of the module docstring (pcento in percent;
        ``pcento=0`` or a huge ``kstop`` disables that rule, ``peps=0`` the other).
      max_loops: a cap on shuffling loops (default: what the budget allows); sizes the trace.
      random_in: where random points are drawn: ``"complex"`` (the smallest box containing
        the complex, Duan et al. 1994) or ``"box"`` (the whole box).
    """
    n = int(np.shape(lower)[-1])
    m = int(n_points) if n_points is not None else 2 * n + 1
    beta = int(n_steps) if n_steps is not None else 2 * n + 1
    _check_inputs(lower, upper, max_evals, n_complexes, m, beta)
    if random_in not in ("complex", "box"):
        raise ValueError(f"random_in must be 'complex' or 'box', got {random_in!r}")
    p = int(n_complexes)
    bound = n_max_loops(max_evals, n, p, beta, m)
    n_loops = bound if max_loops is None else max(1, min(int(max_loops), bound))
    lower = jnp.asarray(lower)
    dtype = lower.dtype if jnp.issubdtype(lower.dtype, jnp.floating) else jnp.result_type(float)
    st = _init(fun, lower.astype(dtype), jnp.asarray(upper, dtype), key, int(max_evals),
               int(kstop), pcento, peps, p=p, m=m, beta=beta, n_loops=n_loops,
               random_box=random_in == "box")
    if not _is_traced(st.f) and not bool(np.isfinite(np.asarray(st.f[0]))):
        raise ValueError(f"the objective is non-finite (NaN or inf) at all {p * m} points of "
                         f"the initial population; check the objective and its data")
    return st


@partial(jax.jit, static_argnames=("fun", "p", "m", "beta", "n_loops", "random_box"))
def _init(fun, lower, upper, key, max_evals, kstop, pcento, peps, *, p, m, beta, n_loops,
          random_box) -> SCEState:
    # Jitted so that an eager call computes exactly what the same call under jit does.
    n = lower.shape[-1]
    s = p * m
    dtype = lower.dtype
    key, sub = jax.random.split(key)
    x = lower + jax.random.uniform(sub, (s, n), dtype) * (upper - lower)
    # p points at a time (the width of an evolution round): the population of many basins
    # at once would otherwise hold every simulation in memory together.
    f, n_bad = _sanitize(jax.lax.map(fun, x, batch_size=p))
    f = f.astype(dtype)
    order = jnp.argsort(f, stable=True)
    x, f = x[order], f[order]
    i32 = jnp.int32
    max_evals = jnp.asarray(max_evals, i32)
    trace = jnp.full((n_loops + 1,), jnp.inf, dtype).at[0].set(f[0])
    gn = _gnrng(x, lower, upper).astype(dtype)
    stop = jnp.where(max_evals - s < p, BUDGET, jnp.where(gn < peps, GATHERED, RUNNING)).astype(i32)
    return SCEState(
        x=x, f=f, key=key, n_evals=jnp.asarray(s, i32), n_computed=jnp.asarray(s, i32),
        n_nonfinite=n_bad, loop=jnp.asarray(0, i32), trace=trace,
        loop_rounds=jnp.zeros((n_loops,), i32), gnrng=gn, stop=stop,
        lower=lower, upper=upper, max_evals=max_evals,
        n_steps=jnp.asarray(beta, i32), kstop=jnp.asarray(kstop, i32),
        pcento=jnp.asarray(pcento, dtype), peps=jnp.asarray(peps, dtype),
        random_box=jnp.asarray(random_box), n_complexes=jnp.zeros((p,), i32),
        in_loop=jnp.asarray(False), loop_key=key, round=jnp.asarray(0, i32),
        phase=jnp.zeros((p,), i32), cce_step=jnp.zeros((p,), i32),
        sub=jnp.zeros((p, n + 1), i32), centroid=jnp.zeros((p, n), dtype),
        f_worst=jnp.zeros((p,), dtype))


def select_subcomplex(key, m: int, q: int):
    """``q`` distinct ranks of ``0..m-1``, increasing, drawn sequentially without replacement
    with probability proportional to ``m - i`` (rank ``i``; Duan's triangular
    ``rho = 2 (m + 1 - i) / (m (m + 1))`` for 1-based ``i``). Gumbel-top-k draws exactly this
    successive sampling in one vectorised step."""
    w = jnp.log(jnp.arange(m, 0, -1, dtype=jnp.float32))
    g = jax.random.gumbel(key, (m,), jnp.float32)
    _, idx = jax.lax.top_k(w + g, q)
    return jnp.sort(idx)


class _Complex(NamedTuple):
    """One complex's evolution state within a loop."""

    x: Any       # (m, n) sorted
    f: Any       # (m,)
    phase: Any   # () int32: _REFLECT, _CONTRACT, _RANDOM or _DONE
    step: Any    # () int32, steps completed this loop
    sub: Any     # (q,) ranks of the current sub-complex
    g: Any       # (n,) centroid of the sub-complex without its worst point
    fw: Any      # () value of the sub-complex's worst point


def _random_point(key, c: _Complex, lower, upper, random_box):
    lo = jnp.where(random_box, lower, jnp.min(c.x, axis=0))
    hi = jnp.where(random_box, upper, jnp.max(c.x, axis=0))
    return lo + jax.random.uniform(key, lo.shape, lo.dtype) * (hi - lo)


def _propose(c: _Complex, key, lower, upper, random_box, q: int):
    """The point this complex evaluates next (and the sub-complex, for a new step)."""
    k_sel, k_rand = jax.random.split(key)
    m = c.x.shape[0]
    new_step = c.phase == _REFLECT
    sub = jnp.where(new_step, select_subcomplex(k_sel, m, q), c.sub)
    xs = c.x[sub]
    g_new = jnp.mean(xs[:-1], axis=0)
    g = jnp.where(new_step, g_new, c.g)
    w = xs[-1]
    fw = jnp.where(new_step, c.f[sub[-1]], c.fw)
    r = 2.0 * g - w
    inside = jnp.all((r >= lower) & (r <= upper))
    rnd = _random_point(k_rand, c, lower, upper, random_box)
    cand = jnp.where(c.phase == _REFLECT, jnp.where(inside, r, rnd),
                     jnp.where(c.phase == _CONTRACT, 0.5 * (g + w), rnd))
    return cand, c._replace(sub=sub, g=g, fw=fw)


def _accept(c: _Complex, cand, fc, n_steps):
    """Advance the complex's CCE state machine with the value of its candidate."""
    active = c.phase != _DONE
    better = fc < c.fw
    replace = active & ((c.phase == _RANDOM) | better)
    worst = c.sub[-1]
    x = jnp.where(replace, c.x.at[worst].set(cand), c.x)
    f = jnp.where(replace, c.f.at[worst].set(fc), c.f)
    order = jnp.argsort(f, stable=True)
    x, f = x[order], f[order]
    step = c.step + replace.astype(c.step.dtype)
    phase = jnp.where(replace, jnp.where(step >= n_steps, _DONE, _REFLECT),
                      jnp.where(active, c.phase + 1, c.phase)).astype(c.phase.dtype)
    return c._replace(x=x, f=f, phase=phase, step=step)


def _dims(st: SCEState) -> tuple[int, int, int, int]:
    """``(s, n, p, m)``: population size, dimensions, complexes, points per complex."""
    s, n = st.x.shape
    p = st.n_complexes.shape[0]
    return s, n, p, s // p


def _start_loop(st: SCEState) -> SCEState:
    """Partition the sorted population into complexes: complex k holds ranks k, k + p, k + 2p,
    ... (each complex stays sorted); every complex starts a new CCE step."""
    s, n, p, m = _dims(st)
    key, k_loop = jax.random.split(st.key)
    x = st.x.reshape(m, p, n).swapaxes(0, 1).reshape(s, n)
    f = st.f.reshape(m, p).T.reshape(s)
    zero = jnp.zeros_like
    return st._replace(x=x, f=f, key=key, loop_key=k_loop, in_loop=jnp.asarray(True),
                       round=zero(st.round), phase=zero(st.phase), cce_step=zero(st.cce_step),
                       sub=zero(st.sub), centroid=zero(st.centroid), f_worst=zero(st.f_worst))


def _evolve(fun, st: SCEState) -> SCEState:
    """One evaluation round: every complex that has not finished its ``beta`` steps evaluates
    the one point its CCE needs next."""
    s, n, p, m = _dims(st)
    cs = _Complex(st.x.reshape(p, m, n), st.f.reshape(p, m), st.phase, st.cce_step, st.sub,
                  st.centroid, st.f_worst)
    keys = jax.random.split(jax.random.fold_in(st.loop_key, st.round), p)
    cand, cs = jax.vmap(partial(_propose, q=n + 1), in_axes=(0, 0, None, None, None))(
        cs, keys, st.lower, st.upper, st.random_box)
    fc, _ = _sanitize(jax.vmap(fun)(cand).astype(st.f.dtype))
    active = cs.phase != _DONE
    n_bad = st.n_nonfinite + jnp.sum(active & ~jnp.isfinite(fc)).astype(jnp.int32)
    n_evals = st.n_evals + jnp.sum(active).astype(jnp.int32)
    cs = jax.vmap(_accept, in_axes=(0, 0, 0, None))(cs, cand, fc, st.n_steps)
    return st._replace(x=cs.x.reshape(s, n), f=cs.f.reshape(s), phase=cs.phase, cce_step=cs.step,
                       sub=cs.sub, centroid=cs.g, f_worst=cs.fw, n_evals=n_evals, n_nonfinite=n_bad,
                       round=st.round + 1)


def _loop_over(st: SCEState):
    """Whether the current loop has no round left: every complex has done its ``beta`` steps,
    or the budget cannot pay for one more round."""
    n_active = jnp.sum(st.phase != _DONE)
    return (n_active == 0) | (st.n_evals + n_active > st.max_evals)


def _finish_loop(st: SCEState) -> SCEState:
    """Shuffle (merge the complexes and sort), record the best, check the stopping rules."""
    s, n, p, m = _dims(st)
    x = st.x.reshape(p, m, n).swapaxes(0, 1).reshape(s, n)
    f = st.f.reshape(p, m).T.reshape(s)
    order = jnp.argsort(f, stable=True)
    x, f = x[order], f[order]
    loop = st.loop + 1
    trace = st.trace.at[loop].set(f[0])
    gn = _gnrng(x, st.lower, st.upper).astype(st.gnrng.dtype)
    # Duan's criterion over the last kstop loop bests F_{t-kstop+1..t}.
    t = jnp.arange(st.trace.shape[0])
    win = (t >= loop - st.kstop + 1) & (t <= loop) & (t >= 1)
    first = trace[jnp.clip(loop - st.kstop + 1, 0, st.trace.shape[0] - 1)]
    denom = jnp.sum(jnp.where(win, jnp.abs(trace), 0.0)) / jnp.maximum(st.kstop, 1)
    change = jnp.where(denom == 0.0, 0.0, 100.0 * jnp.abs(f[0] - first) / denom)
    no_improve = (loop >= st.kstop) & (change < st.pcento)
    out_of_loops = loop >= st.loop_rounds.shape[0]
    stop = jnp.where(st.max_evals - st.n_evals < p, BUDGET,
           jnp.where(gn < st.peps, GATHERED,
           jnp.where(no_improve, NO_IMPROVEMENT,
           jnp.where(out_of_loops, MAX_LOOPS, RUNNING)))).astype(jnp.int32)
    return st._replace(
        x=x, f=f, n_computed=st.n_computed + st.round * p, loop=loop, trace=trace,
        loop_rounds=st.loop_rounds.at[st.loop].set(st.round), gnrng=gn, stop=stop,
        in_loop=jnp.asarray(False))


def _advance(fun, st: SCEState, end_loop) -> SCEState:
    """One step of the run: start a loop if none is under way (and ``loop < end_loop``), one
    evaluation round, and the shuffle when that was the loop's last round. Each problem
    shuffles as soon as its own complexes are done, so under ``vmap`` no problem waits for
    another's loop to end (the only waiting is at the end of a :func:`run`)."""
    start = ~st.in_loop & (st.stop == RUNNING) & (st.loop < end_loop)
    st = jax.lax.cond(start, _start_loop, lambda s: s, st)
    st = jax.lax.cond(st.in_loop, partial(_evolve, fun), lambda s: s, st)
    return jax.lax.cond(st.in_loop & _loop_over(st), _finish_loop, lambda s: s, st)


@partial(jax.jit, static_argnames=("fun",))
def run(state: SCEState, fun: Callable, n_loops=None, *, n_rounds=None) -> SCEState:
    """Advance ``state`` by at most ``n_loops`` shuffling loops (all of them, until a
    stopping rule fires, when ``None``), or, with ``n_rounds``, by at most that many
    evaluation rounds (a state may then be inside a loop; the next ``run`` continues it).
    Pure: ``run(run(s, f, a), f, b)`` equals ``run(s, f, a + b)`` bit for bit (likewise with
    ``n_rounds``), so a long calibration can be checkpointed between chunks (``state`` is a
    PyTree of arrays). ``n_loops`` and ``n_rounds`` may be traced."""
    if n_rounds is not None and n_loops is not None:
        raise ValueError("pass n_loops or n_rounds, not both")
    big = jnp.iinfo(jnp.int32).max
    limit = state.loop_rounds.shape[0] if n_loops is None else n_loops
    end_loop = big if n_rounds is not None else state.loop + jnp.asarray(limit, jnp.int32)
    max_rounds = big if n_rounds is None else jnp.asarray(n_rounds, jnp.int32)

    def cond(carry):
        st, r = carry
        return (st.stop == RUNNING) & (st.in_loop | (st.loop < end_loop)) & (r < max_rounds)

    def body(carry):
        st, r = carry
        return _advance(fun, st, end_loop), r + 1

    return jax.lax.while_loop(cond, body, (state, jnp.asarray(0, jnp.int32)))[0]


def best(state: SCEState):
    """``(x (n,), f ())``: the best point of a state (also inside a loop, when the population
    is held complex by complex)."""
    i = jnp.argmin(state.f)
    return state.x[i], state.f[i]


def result(state: SCEState) -> SCEResult:
    """The :class:`SCEResult` of a state (best point, counts, trace, stop code)."""
    x, f = best(state)
    return SCEResult(x=x, fun=f, n_evals=state.n_evals,
                     n_computed=state.n_computed, n_nonfinite=state.n_nonfinite,
                     n_loops=state.loop, trace=state.trace, n_trace=state.loop + 1,
                     stop=state.stop, gnrng=state.gnrng, state=state)


def sce_ua(fun: Callable, lower, upper, *, key, max_evals: int, n_complexes: int = 2,
           n_points: int | None = None, n_steps: int | None = None, kstop: int = 10,
           pcento: float = 0.1, peps: float = 1e-3, max_loops: int | None = None,
           random_in: str = "complex") -> SCEResult:
    """Minimise ``fun`` over the box ``[lower, upper]`` with SCE-UA (module docstring).

    ``init`` + ``run`` to completion. Jit-able and vmap-able: for many problems (basins) at
    once, pass each problem's data as an argument, e.g.
    ``jax.jit(jax.vmap(lambda data, k: sce_ua(partial(obj, data), lo, hi, key=k, max_evals=E)))``;
    every problem's population then evolves in one compiled program. Options as :func:`init`.

    Returns an :class:`SCEResult`: ``x (n,)``, ``fun ()``, ``n_evals``, ``trace (L + 1,)``
    with ``n_trace`` valid entries, ``n_loops``, ``stop`` (see :func:`stop_reason`), ...
    """
    st = init(fun, lower, upper, key=key, max_evals=max_evals, n_complexes=n_complexes,
              n_points=n_points, n_steps=n_steps, kstop=kstop, pcento=pcento, peps=peps,
              max_loops=max_loops, random_in=random_in)
    return result(run(st, fun))
