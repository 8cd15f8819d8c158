"""The ``dpljax`` command: thin; it only turns configs into calls of library functions.

    dpljax [experiment=NAME] [key=value ...] [-m]   train + test an experiment (Hydra)
    dpljax evaluate RUN_DIR [--which last]          re-run a saved model (or calibration) on
                                                    its test period (PUB: every fold, pooled;
                                                    --which last: the last training step's)
    dpljax predict RUN_DIR DATA [--start --end ...] run a trained dPL model on other basins or
                                                    periods (no streamflow needed): predictions.zarr
    dpljax ensemble OUT_DIR RUN_DIR RUN_DIR [...]   score the mean streamflow of finished runs on
                                                    the same split (dpljax evaluate OUT_DIR redoes it)
    dpljax data camels-us SOURCE_DIR OUT.zarr       convert the official CAMELS-US layout
    dpljax data csv SOURCE_DIR OUT.zarr             convert a folder of CSV files, one per basin
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def _train(cfg) -> float:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from .experiment import SECTIONS, ConfigError, run_experiment

    config = OmegaConf.to_container(cfg, resolve=True)
    unknown = sorted(set(config) - set(SECTIONS) - {"name", "pub", "calibrate"})
    if unknown:
        raise ConfigError(f"unknown top-level config key(s) {unknown} (known: {list(SECTIONS)})")
    from .parallel import use_host_devices

    use_host_devices((config.get("train") or {}).get("devices"))  # before JAX starts
    run_dir = HydraConfig.get().runtime.output_dir
    print(f"run directory: {run_dir}")
    pub, calibrate = config.get("pub"), config.get("calibrate")
    config = {k: config[k] for k in SECTIONS}
    if calibrate:  # per-basin calibration instead of dPL training (dpljax.calibrate)
        from .calibrate.runner import run_calibration

        return run_calibration({**config, "calibrate": calibrate}, run_dir)["median_nse"]
    if pub:  # k-fold prediction in ungauged basins; each fold resumes on its own
        from .pub import run_pub

        known = ("n_folds", "seed", "folds")
        if set(pub) - set(known):
            raise ConfigError(f"unknown pub key(s) {sorted(set(pub) - set(known))} (known: {', '.join(known)})")
        return run_pub(config, run_dir, n_folds=int(pub["n_folds"]), seed=int(pub["seed"]),
                       folds=pub.get("folds"))["median_nse"]
    if config["train"].get("resume"):  # the run's saved config governs; see README "Resume"
        from .resume import resume_config

        config = resume_config(config, run_dir, list(HydraConfig.get().overrides.task))
    summary = run_experiment(config, run_dir)
    return summary["median_nse"]


def _train_or_say_why(cfg) -> float:
    """``_train``; a user error (a bad config, path or dataset, a run directory that cannot be
    resumed, a diverged run, an unknown model or network name) ends with its message on
    stderr and exit status 1 instead of Hydra's traceback (see :func:`_user_errors`)."""
    import logging

    from .registry import RegistryError

    logging.getLogger("jax").setLevel(logging.WARNING)  # not JAX's INFO lines on absent TPUs
    return _user_errors("dpljax", _train, cfg, also=(RegistryError,))


def _hydra_entry():
    import hydra

    main = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")(_train_or_say_why)
    return main()


def _evaluate(argv):
    p = argparse.ArgumentParser(prog="dpljax evaluate", description="Re-run a saved model on its "
                                "test period and recompute its metrics (written to RUN_DIR/evaluation).")
    p.add_argument("run_dir")
    p.add_argument("--which", choices=("written", "last"), default="written",
                   help="written (default): the model the run wrote, weights.npz (the best state under "
                        "validation, the moving average under train.ema); last: the parameters of its last "
                        "training step (checkpoints/last.npz), scored into RUN_DIR/evaluation_last")
    args = p.parse_args(argv)
    run_dir = Path(args.run_dir)
    from .ensemble import evaluate_ensemble, evaluate_member, is_ensemble

    if is_ensemble(run_dir):
        if args.which != "written":
            p.error("--which last applies to a single dPL training run, not to an ensemble (evaluate a member)")
        evaluate_ensemble(run_dir)
        return
    evaluate_member(run_dir, which=args.which, log=print)


def _ensemble(argv):
    p = argparse.ArgumentParser(prog="dpljax ensemble", description="Score the mean streamflow of finished runs on "
                                "the same test split (dPL runs or calibrations on the same basins and days, or PUB "
                                "cross-validations with the same folds) into OUT_DIR: ensemble.json, "
                                "predictions_test.zarr, metrics_test.csv, summary.json (each member's median "
                                "beside the mean's). dpljax evaluate OUT_DIR re-runs the members' models.")
    p.add_argument("out_dir", help="a new directory (or an ensemble of the same members, scored again)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="the members, at least two")
    args = p.parse_args(argv)
    if len(args.run_dirs) < 2:
        p.error(f"an ensemble needs at least two run directories, got {args.run_dirs}")
    from .ensemble import build_ensemble

    build_ensemble(args.out_dir, args.run_dirs)


def _predict(argv):
    p = argparse.ArgumentParser(prog="dpljax predict", description="Run a trained dPL model (RUN_DIR) on the "
                                "basins of DATA over a period of one's choosing; DATA needs the forcings and "
                                "attributes the run was trained with, streamflow is optional. Writes "
                                "predictions.zarr (streamflow and physical parameters), summary.json and, "
                                "where DATA has observations, metrics.csv.")
    p.add_argument("run_dir", help="a finished dPL run directory (not a calibration)")
    p.add_argument("data", help="a zarr store following the data contract, or 'sample'")
    p.add_argument("--start", default=None, help="first day predicted, YYYY-MM-DD (default: the store's first "
                   "day after the warm-up)")
    p.add_argument("--end", default=None, help="last day predicted (default: the store's last day)")
    p.add_argument("--basins", nargs="*", default=None, help="basin ids (default: all of DATA)")
    p.add_argument("--warmup-days", type=int, default=None, help="days run before --start and not written "
                   "(default: as the run's own evaluation: data.test_warmup_days, else its training length)")
    p.add_argument("--variables", nargs="*", default=None, metavar="NAME=STORE_NAME",
                   help="the store's own names of contract variables (default: the run's data.variables)")
    p.add_argument("--out", default=None, help="output directory (default: RUN_DIR/prediction)")
    args = p.parse_args(argv)
    variables = None
    if args.variables is not None:
        bad = [v for v in args.variables if v.count("=") != 1 or not all(v.split("="))]
        if bad:
            p.error(f"--variables takes NAME=STORE_NAME pairs, got {bad}")
        variables = dict(v.split("=") for v in args.variables)
    from .predict import predict_run

    predict_run(args.run_dir, args.data, out=args.out, start=args.start, end=args.end, basins=args.basins,
                warmup_days=args.warmup_days, variables=variables)


def _data(argv):
    p = argparse.ArgumentParser(prog="dpljax data", description="Dataset tools.")
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("camels-us", help="convert the official CAMELS-US download to the dataset contract (zarr)")
    c.add_argument("source_dir")
    c.add_argument("out")
    c.add_argument("--basins", nargs="*", default=None, help="basin ids (default: every forcing file found)")
    v = sub.add_parser("csv", help="convert a folder of CSV files, one per basin (+ attributes.csv), to the "
                       "dataset contract (zarr); layout: README 'Bring your own data'")
    v.add_argument("source_dir", help="folder of <basin id>.csv files (a 'date' column YYYY-MM-DD and one column "
                   "per daily variable: prcp, tmean or tmax+tmin, pet [, streamflow]; mm/day and degC)")
    v.add_argument("out")
    v.add_argument("--attributes", default=None, help="CSV of static attributes, one row per basin, a 'basin' "
                   "column (default: SOURCE_DIR/attributes.csv when present)")
    v.add_argument("--date-column", default="date", help="name of the date column (default: date)")
    v.add_argument("--basins", nargs="*", default=None, help="basin ids (default: every CSV file found)")
    v.add_argument("--missing-values", nargs="*", type=float, default=(),
                   help="numbers that mean missing (e.g. -999); without it such codes are an error")
    args = p.parse_args(argv)
    from .data.camels import write_zarr

    if args.what == "csv":
        from .data.csvdir import read_csv_dir

        ds = read_csv_dir(args.source_dir, attributes=args.attributes, date_column=args.date_column,
                          basins=args.basins, missing_values=args.missing_values)
    else:
        from .data.camels import read_camels_us

        ds = read_camels_us(args.source_dir, basins=args.basins)
    write_zarr(ds, args.out)
    line = f"wrote {args.out}: {ds.sizes['basin']} basins x {ds.sizes['time']} days"
    if args.what == "csv":
        t = ds["time"].values
        line += (f" ({str(t[0])[:10]}..{str(t[-1])[:10]}); daily variables "
                 f"{[str(k) for k in ds.data_vars if ds[k].dims == ('basin', 'time')]}; "
                 f"{sum(ds[k].dims == ('basin',) for k in ds.data_vars)} attribute(s)")
    print(line)


def _user_errors(prog: str, fn, arg, also: tuple = ()):
    """``fn(arg)``; a user error (bad path, bad data, an inconsistent run directory; and the
    classes in ``also``) ends with its message on stderr and exit status 1, not a traceback
    (``DPLJAX_TRACEBACK=1`` shows it)."""
    import os

    try:
        return fn(arg)
    except (ValueError, OSError, FloatingPointError, *also) as e:
        if os.environ.get("DPLJAX_TRACEBACK"):
            raise
        print(f"{prog}: error: {type(e).__name__}: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def _lock_before_hydra(argv: list[str]) -> list[str]:
    """With ``hydra.run.dir=DIR`` given, take DIR's lock before Hydra writes its own files
    there (``.hydra/``, the log), so that a second command on a directory in use writes
    nothing; in a directory that already holds a run, Hydra's files of the first start are
    kept as they are (its log goes to the terminal). Returns the arguments for Hydra."""
    if any(a.startswith("-") for a in argv):  # --multirun, --help, --cfg ...: Hydra's business
        return argv
    dirs = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    if len(dirs) != 1 or "${" in dirs[0] or not dirs[0]:
        return argv
    import atexit

    from .rundir import RunDirLocked, acquire, release

    run_dir = Path(dirs[0])
    existing = (run_dir / "config.yaml").exists()
    try:
        acquire(run_dir)
    except RunDirLocked as e:
        print(f"dpljax: error: RunDirLocked: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    atexit.register(release, run_dir)
    if existing:
        argv = [*argv, "hydra.output_subdir=null", "hydra/job_logging=stdout"]
    return argv


def main(argv=None) -> None:
    """Console entry point (its return value becomes the exit status: always None here)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "evaluate":
        _user_errors("dpljax evaluate", _evaluate, argv[1:])
        return
    if argv and argv[0] == "data":
        _user_errors("dpljax data", _data, argv[1:])
        return
    if argv and argv[0] == "predict":
        _user_errors("dpljax predict", _predict, argv[1:])
        return
    if argv and argv[0] == "ensemble":
        _user_errors("dpljax ensemble", _ensemble, argv[1:])
        return
    argv = _lock_before_hydra(argv)
    sys.argv = [sys.argv[0]] + argv
    _hydra_entry()


if __name__ == "__main__":
    main()
