"""The ``dpljax`` command: thin; it only turns configs into calls of library functions.

    dpljax [experiment=NAME] [key=value ...] [-m]   train + test an experiment (Hydra)
    dpljax evaluate RUN_DIR                         re-run a saved model (or calibration) on
                                                    its test period (PUB: every fold, pooled)
    dpljax data camels-us SOURCE_DIR OUT.zarr       convert the official CAMELS-US layout
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def _train(cfg) -> float:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from .experiment import SECTIONS, run_experiment

    config = OmegaConf.to_container(cfg, resolve=True)
    unknown = sorted(set(config) - set(SECTIONS) - {"name", "pub", "calibrate"})
    if unknown:
        from .experiment import ConfigError

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

        return run_pub(config, run_dir, n_folds=int(pub["n_folds"]), seed=int(pub["seed"]))["median_nse"]
    if config["train"].get("resume"):  # the run's saved config governs; see README "Resume"
        from .resume import resume_config

        config = resume_config(config, run_dir, list(HydraConfig.get().overrides.task))
    summary = run_experiment(config, run_dir)
    return summary["median_nse"]


def _hydra_entry():
    import hydra

    main = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")(_train)
    return main()


def _evaluate(argv):
    p = argparse.ArgumentParser(prog="dpljax evaluate", description="Re-run a saved model on its "
                                "test period and recompute its metrics (written to RUN_DIR/evaluation).")
    p.add_argument("run_dir")
    args = p.parse_args(argv)
    if (Path(args.run_dir) / "pub.json").exists():
        from .evaluate import evaluate_pub

        evaluate_pub(args.run_dir)
        return
    import yaml

    config_path = Path(args.run_dir) / "config.yaml"
    if config_path.exists() and (yaml.safe_load(config_path.read_text()) or {}).get("calibrate"):
        from .calibrate.runner import evaluate_calibration

        evaluate_calibration(args.run_dir)
        return
    from .evaluate import evaluate_run

    evaluate_run(args.run_dir)


def _data(argv):
    p = argparse.ArgumentParser(prog="dpljax data", description="Dataset tools.")
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("camels-us", help="convert the official CAMELS-US download to the dataset contract (zarr)")
    c.add_argument("source_dir")
    c.add_argument("out")
    c.add_argument("--basins", nargs="*", default=None, help="basin ids (default: every forcing file found)")
    args = p.parse_args(argv)
    from .data.camels import read_camels_us, write_zarr

    ds = read_camels_us(args.source_dir, basins=args.basins)
    write_zarr(ds, args.out)
    print(f"wrote {args.out}: {ds.sizes['basin']} basins x {ds.sizes['time']} days")


def main(argv=None) -> None:
    """Console entry point (its return value becomes the exit status: always None here)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "evaluate":
        _evaluate(argv[1:])
        return
    if argv and argv[0] == "data":
        _data(argv[1:])
        return
    sys.argv = [sys.argv[0]] + argv
    _hydra_entry()


if __name__ == "__main__":
    main()
