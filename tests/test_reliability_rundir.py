"""Reliability, round two (issue 11): one writer per run directory, run directories whose
files disagree, a refused command that changes nothing, checks that come before training
(test basins, resumed data), a model whose outputs diverged, metrics that are undefined,
strict JSON, and clean errors from ``dpljax evaluate`` and ``dpljax data``."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import EXE, small_config
from dpljax import ConfigError
from dpljax.data import DataError

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONUNBUFFERED="1")
QUIET = lambda *a: None  # noqa: E731
#: The issue's tiny experiment, T.
T = ["train.epochs=1", "train.iters_per_epoch=5", "model.nmul=2", "net.hidden=[16]", "train.window=100",
     "train.warmup=50", "train.batch_basins=4", "train.progress=false",
     "data.test=[1999-10-01,2000-09-30]", "data.test_warmup_days=365"]


def tiny(source="sample", **sections):
    cfg = small_config(data={"source": str(source), "test": ["1999-10-01", "2000-09-30"], "test_warmup_days": 365},
                       train={"epochs": 1, "iters_per_epoch": 3, "batch_basins": 4, "window": 100, "warmup": 50})
    for name, update in sections.items():
        cfg[name] = {**cfg[name], **update}
    return cfg


def snapshot(d: Path) -> dict:
    """Every file under ``d`` with its content hash and modification time."""
    out = {}
    for p in sorted(Path(d).rglob("*")):
        if p.is_file():
            out[str(p.relative_to(d))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def strict_json(path: Path):
    def no_nan(x):
        raise AssertionError(f"{path} holds a bare {x}: not valid JSON")

    return json.loads(Path(path).read_text(), parse_constant=no_nan)


@pytest.fixture(scope="module")
def store(sample, tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "sample.zarr"
    ds = sample.copy(deep=True)
    for v in ds.variables:
        ds[v].encoding = {}
    ds.to_zarr(path, zarr_format=2, consolidated=True)
    return path


@pytest.fixture(scope="module")
def finished(store, tmp_path_factory):
    """A finished tiny run on a zarr copy of the sample."""
    from dpljax.experiment import run_experiment

    run = tmp_path_factory.mktemp("finished") / "run"
    cfg = tiny(store)
    summary = run_experiment(cfg, run, log=QUIET)
    return run, cfg, summary


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- the lock
def _holder(run_dir: Path, seconds: float = 60.0) -> subprocess.Popen:
    """Another process holding ``run_dir``'s lock (it prints 'held' once it has it)."""
    code = ("import sys, time; from dpljax.rundir import acquire; acquire(sys.argv[1]); "
            "print('held', flush=True); time.sleep(float(sys.argv[2]))")
    p = subprocess.Popen([sys.executable, "-c", code, str(run_dir), str(seconds)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV)
    assert p.stdout.readline().strip() == "held", p.stderr.read()
    return p


def test_lock_refuses_a_second_writer_and_takes_over_a_dead_ones(tmp_path, finished, store):
    from dpljax.calibrate.runner import run_calibration
    from dpljax.evaluate import evaluate_run
    from dpljax.experiment import run_experiment
    from dpljax.rundir import LOCK_NAME, RunDirLocked, acquire, release

    run = copy_run(finished[0], tmp_path / "run")
    holder = _holder(run)
    before = snapshot(run)  # the holder's lock file included
    try:
        msg = r"is in use by another dpljax command \(pid %d on .*nothing was written" % holder.pid
        with pytest.raises(RunDirLocked, match=msg):
            evaluate_run(run, log=QUIET)
        resumed = dict(finished[1], train=dict(finished[1]["train"], resume=True))
        with pytest.raises(RunDirLocked, match=msg):
            run_experiment(resumed, run, log=QUIET)
        cal = dict(tiny(store), calibrate={"method": "sceua", "max_evals": 50})
        with pytest.raises(RunDirLocked, match=msg):
            run_calibration(cal, run, log=QUIET)
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    # kill -9 leaves its lock file behind; the kernel has dropped the lock: taken over
    assert (run / LOCK_NAME).exists()
    acquire(run)
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    release(run)
    assert not (run / LOCK_NAME).exists()


def test_two_runs_started_at_once_one_is_refused_the_other_intact(tmp_path):
    """The issue's case 1: two commands on one run directory at the same moment."""
    run = tmp_path / "c"
    # 300 steps, so that the first to take the lock is still training when the other starts
    # (on a loaded machine starting Python and JAX alone can take seconds)
    procs = {n: subprocess.Popen([str(EXE), *T, "train.iters_per_epoch=300", f"model.nmul={n}",
                                  f"hydra.run.dir={run}"], cwd=ROOT, env=ENV,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in (2, 3)}
    out = {n: (p.communicate(timeout=600), p.returncode) for n, p in procs.items()}
    ok = [n for n, (_, rc) in out.items() if rc == 0]
    refused = [n for n, (_, rc) in out.items() if rc != 0]
    assert len(ok) == 1 and len(refused) == 1, {n: (rc, o[1][-1500:]) for n, (o, rc) in out.items()}
    (stdout, stderr), _ = out[refused[0]]
    assert "Traceback" not in stderr, stderr[-2000:]
    # refused by the lock; or, where the other had already finished, as a finished run
    assert "is in use by another dpljax command" in stderr or "already holds a finished run" in stderr, \
        stderr[-2000:]
    # the winner's run, whole and consistent
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["nmul"] == ok[0]
    assert strict_json(run / "summary.json")["steps"] == 300
    assert not (run / ".dpljax.lock").exists()
    from dpljax.evaluate import evaluate_run

    again = evaluate_run(run, log=QUIET)
    assert again["median_nse"] == pytest.approx(strict_json(run / "summary.json")["median_nse"], abs=1e-6)
    # A refused command on the command line leaves every file as it was, Hydra's own included.
    before = snapshot(run)
    r = subprocess.run([str(EXE), "train.resume=true", "model.nmul=5", f"hydra.run.dir={run}"], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "cannot resume" in r.stdout + r.stderr, r.stderr[-2000:]
    assert snapshot(run) == before


# ----------------------------------------------------- checks before training, before writing
def _no_training(monkeypatch):
    import dpljax.experiment as X

    def no_compute(*a, **k):
        raise AssertionError("training started before the data were checked")

    monkeypatch.setattr(X, "fit", no_compute)
    return X


def test_test_basins_are_checked_before_training(tmp_path, monkeypatch):
    """The issue's case 2: a test basin that is not in the data."""
    X = _no_training(monkeypatch)
    with pytest.raises(DataError, match=r"basin\(s\) not in the dataset: 99999999"):
        X.run_experiment(tiny(data={"test_basins": ["99999999"]}), tmp_path / "r", log=QUIET)
    assert not (tmp_path / "r").exists()  # nothing written, not even the directory


def test_resume_on_different_data_is_refused_and_changes_nothing(finished, tmp_path, sample):
    """The issue's case 6: same statistics, one basin's streamflow changed."""
    from dpljax.experiment import run_experiment
    from dpljax.resume import ResumeError

    run = copy_run(finished[0], tmp_path / "run")
    ds = sample.copy(deep=True)
    for v in ds.variables:
        ds[v].encoding = {}
    ds["streamflow"].loc[dict(basin="01022500", time=slice("1990-01-01", "1990-01-03"))] *= 1.5
    other = tmp_path / "other.zarr"
    ds.to_zarr(other, zarr_format=2, consolidated=True)
    cfg = dict(finished[1], data=dict(finished[1]["data"], source=str(other)),
               train=dict(finished[1]["train"], resume=True))
    before = snapshot(run)
    with pytest.raises(ResumeError, match=r"the training data differ from those the run was trained on"):
        run_experiment(cfg, run, log=QUIET)
    assert snapshot(run) == before


def test_a_refused_start_or_resume_leaves_every_file_as_it_was(finished, tmp_path):
    from dpljax.experiment import run_experiment
    from dpljax.resume import ResumeError

    run = copy_run(finished[0], tmp_path / "run")
    before = snapshot(run)
    with pytest.raises(ConfigError, match="already holds a training run"):
        run_experiment(finished[1], run, log=QUIET)
    other = json.loads(json.dumps(finished[1]))
    other["train"]["resume"], other["model"]["nmul"] = True, 3
    with pytest.raises(ResumeError, match="model.nmul: 2 -> 3"):
        run_experiment(other, run, log=QUIET)
    assert snapshot(run) == before


def test_a_started_run_of_another_config_is_not_overwritten(tmp_path, monkeypatch):
    """A run stopped before its first checkpoint: the same command starts it again; another
    configuration is refused (its config.yaml would no longer describe its files)."""
    from dpljax.rundir import RunDirError

    X = _no_training(monkeypatch)
    run = tmp_path / "r"
    run.mkdir()
    import yaml

    (run / "config.yaml").write_text(yaml.safe_dump(tiny()))
    before = snapshot(run)
    with pytest.raises(RunDirError, match=r"holds the start of another run \(config.yaml differs: model.nmul: 2 -> 3"):
        X.run_experiment(tiny(model={"nmul": 3}), run, log=QUIET)
    assert snapshot(run) == before
    with pytest.raises(AssertionError, match="training started"):  # the same config goes on
        X.run_experiment(tiny(), run, log=QUIET)


# ------------------------------------------------------------------ a diverged model
def test_a_diverged_run_fails_loudly_and_saves_no_model(tmp_path):
    """The issue's case 4: learning rate 1e38."""
    from dpljax.evaluate import DivergedError
    from dpljax.experiment import run_experiment

    run = tmp_path / "r"
    with pytest.raises(DivergedError, match=r"training diverged: the model's predictions are NaN or inf for "
                                            r"\d+ of 8 basins.*Lower optim.learning_rate \(now 1e\+38\)"):
        run_experiment(tiny(optim={"learning_rate": 1e38}, train={"iters_per_epoch": 4}), run, log=QUIET)
    assert not (run / "weights.npz").exists() and not (run / "summary.json").exists()
    assert not (run / "metrics_test.csv").exists()
    assert (run / "checkpoints" / "last.npz").exists()  # the evidence is kept


def test_a_nan_simulation_has_a_nan_loss_never_zero():
    import jax.numpy as jnp

    from dpljax.losses import NSEBatch, RMSECombined

    obs = jnp.ones((2, 10))
    sim = jnp.full((2, 10), jnp.nan)
    assert jnp.isnan(RMSECombined()(sim, obs, jnp.ones(2)))
    assert jnp.isnan(NSEBatch()(sim, obs, jnp.ones(2)))


def test_the_model_api_checks_concrete_inputs_only():
    import jax
    import jax.numpy as jnp

    from dpljax.models import hbv

    p = {"beta": 2.0, "fc": 300.0, "k0": 0.3, "k1": 0.1, "k2": 0.02, "lp": 0.6, "perc": 2.0, "uzl": 20.0,
         "tt": 0.0, "cfmax": 3.0, "cfr": 0.05, "cwh": 0.1, "betaet": 1.5}
    f = [jnp.ones(20), jnp.zeros(20), jnp.ones(20)]
    assert np.isfinite(np.asarray(hbv.run(p, *f).fluxes.q)).all()
    with pytest.raises(ValueError, match=r"hbv: parameter 'fc' = 0 lies outside its bounds \[50, 1000\]"):
        hbv.run({**p, "fc": 0.0}, *f)
    with pytest.raises(ValueError, match=r"hbv: parameter 'beta' = nan"):
        hbv.run({**p, "beta": float("nan")}, *f)
    with pytest.raises(ValueError, match=r"hbv: forcing 'prcp' is NaN or inf on day\(s\) 3 of 20"):
        hbv.run(p, f[0].at[3].set(jnp.nan), *f[1:])
    with pytest.raises(ValueError, match=r"hbv: forcing 'tmean' has shape \(19,\); every forcing must be \(20,\)"):
        hbv.run(p, f[0], jnp.zeros(19), f[2])
    with pytest.raises(ValueError, match=r"parameter 'fc' has shape \(3,\); expected \(\) or \(20,\)"):
        hbv.run({**p, "fc": jnp.full(3, 300.0)}, *f)
    # traced: nothing is checked (documented), nothing added to the program
    q = jax.jit(lambda fc: hbv.run({**p, "fc": fc}, *f).fluxes.q)(2000.0)
    assert q.shape == (20,)


# ------------------------------------------------------------- undefined metrics, JSON
def test_metrics_of_one_observation_are_nan_not_a_crash():
    """The issue's case 3, at the metric level, with the other undefined cases."""
    import warnings

    from dpljax import metrics as M

    cases = [([], []), ([1.0], [2.0]), ([1.0, 2, 3], [2.0, 2, 2]), ([1.0, 2, 3], [0.0, 0, 0]),
             ([np.nan, 1, 2], [1.0, 2, 3]), ([np.inf, 1, 2], [1.0, 2, 3]), ([1.0, 2], [np.nan, np.nan])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for sim, obs in cases:
            t = M.table(np.array([sim]).reshape(1, -1), np.array([obs]).reshape(1, -1), ["b"])
            assert set(M.METRICS) <= set(t.columns)
    one = M.table(np.array([[1.0]]), np.array([[2.0]]), ["b"]).iloc[0]
    assert np.isnan(one["nse"]) and np.isnan(one["flv"]) and one["n_obs"] == 1
    nan_sim = M.table(np.array([[np.nan, 1, 2]]), np.array([[1.0, 2, 3]]), ["b"]).iloc[0]
    assert all(np.isnan(nan_sim[m]) for m in M.METRICS)  # never scored on the days that remain


def test_a_one_day_test_period_runs_and_says_what_the_median_is_over(store, tmp_path):
    """The issue's case 3 as a run: data.test of one day; then dpljax evaluate of it."""
    from dpljax.evaluate import evaluate_run
    from dpljax.experiment import run_experiment

    logs = []
    run = tmp_path / "r"
    summary = run_experiment(tiny(store, data={"test": ["2000-06-01", "2000-06-01"]}), run, log=logs.append)
    saved = strict_json(run / "summary.json")
    assert saved["median_nse"] is None and saved["n_basins_nse"] == 0 and saved["n_basins"] == 8
    assert np.isnan(summary["median_nse"])
    assert any("median test NSE: undefined: no basin of 8 has a defined NSE" in str(l) for l in logs)
    again = evaluate_run(run, log=logs.append)
    assert again["n_basins_nse"] == 0 and strict_json(run / "evaluation" / "summary.json")["median_kge"] is None


def test_summary_counts_the_basins_each_median_is_over():
    import pandas as pd

    from dpljax.evaluate import median_line, summarise

    t = pd.DataFrame({"nse": [0.5, np.nan, 0.7], "kge": [0.1, 0.2, np.nan], "n_obs": [10, 1, 10]})
    s = summarise(t)
    assert s["median_nse"] == pytest.approx(0.6) and s["n_basins_nse"] == 2 and s["n_basins_kge"] == 2
    assert median_line(s) == ("median test NSE: 0.6000 (over 2 of 3 basins; NSE is undefined for 1: "
                              "fewer than two observations, or all equal)")


# --------------------------------------------------- run directories whose files disagree
def test_evaluate_refuses_a_run_directory_whose_files_disagree(finished, tmp_path):
    from dpljax.evaluate import evaluate_run
    from dpljax.rundir import RunDirError

    src = finished[0]

    def case(name, mutate, regex):
        run = copy_run(src, tmp_path / name)
        mutate(run)
        before = snapshot(run)
        with pytest.raises(RunDirError, match=regex):
            evaluate_run(run, log=QUIET)
        assert snapshot(run) == before, name

    def edit(run):
        p = run / "config.yaml"
        p.write_text(p.read_text().replace("nmul: 2", "nmul: 3"))

    def truncate(run):
        p = run / "weights.npz"
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    case("edited", edit, r"config.yaml disagrees with the configuration the run was trained with .*"
                         r"model.nmul: 2 -> 3.*Was config.yaml edited")
    case("missing", lambda r: (r / "weights.npz").unlink(), r"weights.npz is missing")
    case("truncated", truncate, r"weights.npz cannot be read: the weights file is truncated or corrupt")
    case("unfinished", lambda r: (r / "summary.json").unlink(),
         r"holds a run that never finished: it has no summary.json \(its last checkpoint, .*last.npz, is at "
         r"step 3\); resume it with `dpljax train.resume=true hydra.run.dir=")
    case("no_normalizer", lambda r: (r / "normalizer.json").unlink(), r"normalizer.json is missing")
    case("not_a_run", lambda r: (r / "config.yaml").unlink(), r"is not a run directory: it has no config.yaml")
    # the intact directory still evaluates, with the same score
    ok = copy_run(src, tmp_path / "ok")
    assert evaluate_run(ok, log=QUIET)["median_nse"] == pytest.approx(finished[2]["median_nse"], abs=1e-6)


def test_committed_runs_pass_the_consistency_check():
    from dpljax.rundir import check_finished_run

    weights = ROOT / "benchmarks" / "weights"
    runs = [p for p in weights.iterdir() if (p / "config.yaml").exists() and not (p / "pub.json").exists()]
    runs += [f for p in weights.iterdir() if (p / "pub.json").exists() for f in sorted(p.glob("fold_*"))]
    assert len(runs) > 10
    for p in runs:
        check_finished_run(p)


def test_a_truncated_checkpoint_is_named_on_resume(finished, tmp_path):
    from dpljax.experiment import run_experiment
    from dpljax.rundir import RunDirError

    run = copy_run(finished[0], tmp_path / "run")
    last = run / "checkpoints" / "last.npz"
    last.write_bytes(last.read_bytes()[:1000])
    before = snapshot(run)
    with pytest.raises(RunDirError, match=r"last.npz cannot be read: the checkpoint file is truncated or corrupt"):
        run_experiment(dict(finished[1], train=dict(finished[1]["train"], resume=True)), run, log=QUIET)
    assert snapshot(run) == before


# ------------------------------------------------------------------- attributes
B = "06431500"


def _attr(name, value, basins=(B,)):
    def mutate(ds):
        ds[name].loc[dict(basin=list(basins))] = value
        return ds
    return mutate


@pytest.mark.parametrize("mutate,overrides,regex", [
    (_attr("area_gages2", np.inf), {},
     r"attribute 'area_gages2' is infinite for basin\(s\) 06431500 \(store a missing attribute as NaN"),
    (_attr("area_gages2", -999.0), {},
     r"attribute 'area_gages2' is -999 for basin\(s\) 06431500 \(-999 looks like a missing-value code: .*"
     r"\+data.attribute_missing_codes=\[-999\]"),
    (lambda ds: _attr("aridity", np.nan, ds["basin"].values)(ds), {},
     r"attribute 'aridity' is missing \(NaN\) for all 8 basins: .*remove it from data.attributes"),
], ids=["inf", "missing-value code", "all NaN"])
def test_bad_attributes_are_named(sample, mutate, overrides, regex):
    from dpljax.data import DataConfig, load

    with pytest.raises(DataError, match=regex):
        load(DataConfig(**overrides), mutate(sample.copy(deep=True)))


def test_declared_missing_codes_read_as_missing_and_statistics_stay_finite(sample):
    from dpljax.data import DataConfig, fit_normalizer, load
    from dpljax.data.dataset import load_with_report

    ds = _attr("area_gages2", -999.0)(sample.copy(deep=True))
    cfg = DataConfig(attribute_missing_codes=[-999])
    out = load(cfg, ds)
    assert np.isnan(out["area_gages2"].sel(basin=B)) and np.isfinite(out["area_gages2"].drop_sel(basin=B)).all()
    norm = fit_normalizer(cfg, out)
    assert all(np.isfinite(v).all() for v in norm.static.values())
    # a bad attribute of one basin can also exclude that basin, like bad forcing
    inf = _attr("area_gages2", np.inf)(sample.copy(deep=True))
    kept, report = load_with_report(DataConfig(on_bad_basin="exclude"), inf, log=QUIET)
    assert B in report.excluded and "attribute 'area_gages2' is infinite" in report.excluded[B]
    with pytest.raises(ValueError, match=r"data.attribute_missing_codes must be a list of numbers"):
        DataConfig(attribute_missing_codes="-999")


# ------------------------------------------------------------------- store-level faults
def _write(ds, path):
    for v in ds.variables:
        ds[v].encoding = {}
    ds.to_zarr(path, zarr_format=2, consolidated=True)
    return path


def test_store_faults_name_the_file_or_variable_and_what_to_do(sample, store, tmp_path):
    import pandas as pd
    import shutil

    from dpljax.data import DataConfig, load

    def fails(source, regex, ds=None):
        with pytest.raises((DataError, FileNotFoundError), match=regex):
            load(DataConfig(source=str(source)), ds)

    f = tmp_path / "data.nc"
    f.write_bytes(b"not zarr")
    fails(f, r"data.source '.*data.nc' is a file, not a zarr store")
    raw = Path("/work/shared/data/camels_us_raw_fixture")
    if not raw.exists():
        raw = tmp_path / "raw"
        (raw / "basin_mean_forcing").mkdir(parents=True)
    fails(raw, r"is the official CAMELS-US layout .*convert it once with `dpljax data camels-us")
    (tmp_path / "empty").mkdir()
    fails(tmp_path / "empty", r"is a directory but not a zarr store")
    fails(tmp_path / "nowhere.zarr", r"does not exist")
    bad_meta = shutil.copytree(store, tmp_path / "meta.zarr")
    (bad_meta / ".zmetadata").write_text("{ not json")
    (bad_meta / ".zgroup").write_text("{ not json")
    fails(bad_meta, r"cannot open the zarr store .*meta.zarr': its metadata are corrupt")
    bad_chunk = shutil.copytree(store, tmp_path / "chunk.zarr")
    chunk = sorted(p for p in (bad_chunk / "prcp").iterdir() if not p.name.startswith("."))[0]
    chunk.write_bytes(b"\x00garbage" * 10)
    fails(bad_chunk, r"cannot read variable 'prcp' from .*a chunk of it is corrupt")
    lost_chunk = shutil.copytree(store, tmp_path / "lost.zarr")
    (lost_chunk / "prcp" / chunk.name).unlink()
    fails(lost_chunk, r"variable 'prcp' of .*lost.zarr' lacks chunk file\(s\) prcp/%s: zarr would read them as NaN"
          % chunk.name.replace(".", r"\."))
    # in-memory datasets: dtype, time axis, basin ids
    ds = sample.copy(deep=True)
    ds["prcp"] = ds["prcp"].astype(np.float16)
    fails("sample", r"variable 'prcp' is float16 .*store it as float32", ds)
    hourly = sample.isel(time=slice(0, 24 * 30)).assign_coords(
        time=pd.date_range("1980-01-01", periods=24 * 30, freq="h"))
    fails("sample", r"time axis is sub-daily \(steps of 0 days 01:00:00", hourly)
    shifted = sample.assign_coords(time=sample.indexes["time"] + pd.Timedelta(hours=6))
    fails("sample", r"time stamps carry a time of day \(first: 1980-01-01 06:00:00\)", shifted)
    aware = sample.assign_coords(time=sample.indexes["time"].tz_localize("America/Denver").to_pydatetime().astype(object))
    fails("sample", r"the time coordinate has dtype object, not dates \(a time axis with a time-zone offset", aware)
    ints = sample.assign_coords(basin=sample["basin"].values.astype(int))
    fails("sample", r"basin ids are numbers \(dtype int64, e.g. 1022500\).*leading zeros", ints)


# ----------------------------------------------------------- the command line's errors
def test_evaluate_and_data_commands_end_in_a_message_not_a_traceback(finished, tmp_path):
    unfinished = copy_run(finished[0], tmp_path / "unfinished")
    (unfinished / "summary.json").unlink()
    no_last = copy_run(finished[0], tmp_path / "no_last")
    (no_last / "checkpoints" / "last.npz").unlink()
    cases = [(["evaluate", str(tmp_path / "nowhere")], r"RunDirError: .*nowhere is not a directory"),
             (["evaluate", str(unfinished)], r"holds a run that never finished"),
             (["evaluate", str(no_last), "--which", "last"], r"RunDirError: .*last.npz is missing: the run's last"),
             (["data", "camels-us", str(tmp_path / "nowhere"), str(tmp_path / "o.zarr")],
              r"FileNotFoundError: CAMELS source folder .*nowhere does not exist")]
    for args, regex in cases:
        r = subprocess.run([str(EXE), *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == 1 and "Traceback" not in r.stderr, (args, r.stderr[-2000:])
        import re

        assert re.search(regex, r.stderr), (args, r.stderr)
        assert r.stderr.startswith(f"dpljax {args[0]}: error: "), r.stderr


def test_training_errors_end_in_a_message_not_a_traceback(tmp_path):
    """A user error in a training command (here a data source that does not exist, and a
    window longer than the training period) is one line on stderr and exit status 1."""
    cases = [([f"data.source={tmp_path / 'nowhere.zarr'}"], r"dpljax: error: FileNotFoundError: dataset .*nowhere"),
             (["data.train=[2000-01-01,2000-03-31]"], r"dpljax: error: ConfigError: train.warmup \+ train.window")]
    for args, regex in cases:
        r = subprocess.run([str(EXE), *T, *args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 1 and "Traceback" not in r.stderr, (args, r.stderr[-2000:])
        import re

        assert re.search(regex, r.stderr), (args, r.stderr)
        assert not (tmp_path / "run" / "config.yaml").exists()


def test_an_undefined_validation_score_never_becomes_the_best():
    from types import SimpleNamespace

    from dpljax.checkpoint import RunRecord
    from dpljax.train import Run

    run = SimpleNamespace(record=RunRecord(), best_theta=None, dir=None)
    Run.offer_best(run, float("nan"), 5, {"w": np.zeros(2)})
    assert run.best_theta is None and run.record.best_score is None
    Run.offer_best(run, 0.3, 10, {"w": np.ones(2)})
    Run.offer_best(run, float("nan"), 15, {"w": np.zeros(2)})
    assert run.record.best_step == 10 and run.record.best_score == 0.3
