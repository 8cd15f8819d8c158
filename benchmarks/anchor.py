"""Our runs against a published model basin by basin, on the published per-basin scores.

A median against a median hides which basins a comparison covers. Where a study published its
per-basin scores (``benchmarks/anchors/<name>.json``, with the source, licence and protocol),
this pairs them with a run's on the same basins: each side's median over those basins, the
median of the paired differences and the basins where the run is better. A PUB run is compared
fold by fold (its finished folds: a run still training compares what it has) and pooled::

    python -m benchmarks.anchor SOURCE [--anchor kratzert2019] [--series pub_lstm] [--out FILE]

``SOURCE``: a run directory (a PUB run with ``pub.json`` and ``fold_*/``, or a single run
with ``metrics_test.csv``), or a recorded ``results/<name>.json`` (its ``per_basin_nse``).
A basin of the run that the anchor lacks is an error naming it: nothing is dropped silently.
``--common`` compares on the basins both have instead (e.g. a 671-basin run against a
531-basin study), and says how many of the run's were left out. ``--by aridity,frac_snow``
splits the pooled basins into terciles of each attribute (read from the CAMELS-US store,
``--store`` or $DPLJAX_CAMELS_US) and pairs each tercile: where the run wins and loses.
``--decompose`` adds, for the run (a run directory: its ``predictions_test.zarr``), the median
of each term of ``1 - NSE = timing + variability + volume`` (:func:`dpljax.metrics.nse_terms`)
pooled and in each tercile: why it loses there.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ANCHORS = HERE / "anchors"


def load_anchor(name: str, anchors: Path = ANCHORS) -> dict:
    path = anchors / f"{name}.json"
    if not path.exists():
        have = sorted(p.stem for p in anchors.glob("*.json"))
        raise ValueError(f"no published per-basin scores named {name!r} in {anchors} (have: {have})")
    return json.loads(path.read_text())


def _scores(csv: Path) -> dict[str, float]:
    table = pd.read_csv(csv, dtype={"basin": str})
    return {str(b): float(v) for b, v in zip(table["basin"], table["nse"])}


def run_scores(source: str | Path) -> dict[str, dict[str, float]]:
    """Per-basin test NSE of ``source`` by part: ``fold_<k>`` for each finished fold of a PUB
    run directory, else one part ``all``."""
    source = Path(source)
    if source.is_file():
        rec = json.loads(source.read_text())
        if "per_basin_nse" not in rec:
            raise ValueError(f"{source} has no per_basin_nse (a recorded result of benchmarks.camels record)")
        return {"all": {str(b): float(v) for b, v in rec["per_basin_nse"].items()}}
    if (source / "pub.json").exists():
        folds = sorted((f for f in source.glob("fold_*") if (f / "summary.json").exists()),
                       key=lambda f: int(f.name.split("_")[1]))
        if not folds:
            raise ValueError(f"{source}: no PUB fold is finished yet (a finished fold has a summary.json)")
        return {f.name: _scores(f / "metrics_test.csv") for f in folds}
    if (source / "metrics_test.csv").exists():
        return {"all": _scores(source / "metrics_test.csv")}
    raise ValueError(f"{source} is neither a run directory (metrics_test.csv, or pub.json with "
                     "fold_*/) nor a recorded results JSON")


def run_terms(source: str | Path) -> dict[str, dict[str, float]]:
    """Per basin of a run directory (every finished fold of a PUB run), the terms of 1 - NSE
    (:func:`dpljax.metrics.nse_terms`) from its test predictions."""
    import xarray as xr

    from dpljax.metrics import nse_terms

    source = Path(source)
    dirs = ([f for f in source.glob("fold_*") if (f / "summary.json").exists()]
            if (source / "pub.json").exists() else [source])
    out = {}
    for d in dirs:
        if not (d / "predictions_test.zarr").exists():
            raise ValueError(f"{d} has no predictions_test.zarr: --decompose needs a run directory's test "
                             "predictions (committed weights: `dpljax evaluate` writes them)")
        ds = xr.open_zarr(d / "predictions_test.zarr").load()
        for i, b in enumerate(ds["basin"].values):
            out[str(b)] = nse_terms(ds["q_sim"].values[i], ds["q_obs"].values[i])
    return out


def median_terms(terms: dict[str, dict[str, float]], basins) -> dict[str, float]:
    """The median over ``basins`` of each term (every basin must have them)."""
    missing = sorted(set(basins) - set(terms))
    if missing:
        raise ValueError(f"no test predictions for basins {missing[:10]}")
    keys = next(iter(terms.values())).keys()
    return {k: float(np.nanmedian([terms[b][k] for b in basins])) for k in keys}


def paired(ours: dict[str, float], ref: dict[str, float | None]) -> dict:
    """The run against the reference on the run's basins (all of which the reference must
    have, with a score)."""
    missing = sorted(b for b in ours if ref.get(b) is None)
    if missing:
        raise ValueError(f"the published scores lack {len(missing)} of the run's basins: "
                         f"{missing[:10]}{' ...' if len(missing) > 10 else ''}")
    undefined = sorted(b for b, v in ours.items() if not np.isfinite(v))
    if undefined:
        raise ValueError(f"the run's NSE is not finite for {len(undefined)} basins: {undefined[:10]} "
                         "(no test observations?); the medians would be undefined")
    basins = sorted(ours)
    diff = [ours[b] - ref[b] for b in basins]
    return {"n_basins": len(basins),
            "median_nse": statistics.median(ours[b] for b in basins),
            "anchor_median_nse": statistics.median(ref[b] for b in basins),
            "median_paired_difference": statistics.median(diff),
            "better_in": sum(d > 0 for d in diff)}


def compare(source: str | Path, anchor: str = "kratzert2019", series: str = "pub_lstm",
            anchors: Path = ANCHORS, common: bool = False, by=None, store=None,
            decompose: bool = False) -> dict:
    """The comparison (see the module's doc); ``by``: attribute names to split the pooled
    basins by (read from ``store``), or ``{attribute: {basin: value}}`` given directly."""
    a = load_anchor(anchor, anchors)
    if series not in a["series"]:
        raise ValueError(f"{anchor} has no series {series!r} (has: {sorted(a['series'])})")
    ref = a["series"][series]["nse"]
    parts = run_scores(source)
    left_out = {}
    if common:
        for k, v in parts.items():
            left_out[k] = sorted(b for b in v if ref.get(b) is None)
            parts[k] = {b: x for b, x in v.items() if ref.get(b) is not None}
    out = {"source": str(source), "anchor": anchor, "series": series,
           "series_what": a["series"][series]["what"], "protocol": a.get("protocol"),
           "parts": {k: paired(v, ref) for k, v in parts.items()}}
    if common:
        out["left_out"] = {k: {"n_basins": len(v), "basins": v} for k, v in left_out.items()}
    pooled = {}
    if len(parts) > 1:
        for k, v in parts.items():
            twice = sorted(set(pooled) & set(v))
            if twice:
                raise ValueError(f"{source}: basins {twice[:5]} are in more than one fold")
            pooled.update(v)
        out["pooled"] = paired(pooled, ref)
    else:
        pooled = next(iter(parts.values()))
    terms = run_terms(source) if decompose else None
    if terms is not None:
        out["terms"] = median_terms(terms, pooled)
    if by:
        out["by"] = by_terciles(pooled, ref, store_attributes(list(by), sorted(pooled), store)
                                if not isinstance(by, dict) else by, terms)
    return out


def by_terciles(ours: dict[str, float], ref: dict, attributes: dict[str, dict[str, float]],
                terms: dict | None = None) -> dict:
    """``paired`` within the lower, middle and upper third of the basins by each attribute
    (``{attribute: {basin: value}}``, every basin of ``ours`` with a finite value), with the
    run's median terms of 1 - NSE in each third when ``terms`` (of :func:`run_terms`) is given."""
    out = {}
    for name, values in attributes.items():
        bad = sorted(b for b in ours if not np.isfinite(values.get(b, np.nan)))
        if bad:
            raise ValueError(f"attribute {name!r} has no value for basins {bad[:10]}")
        basins = sorted(ours, key=lambda b: (values[b], b))
        thirds = np.array_split(np.array(basins), 3)
        out[name] = {label: {**paired({b: ours[b] for b in part}, ref),
                             "range": [float(values[part[0]]), float(values[part[-1]])],
                             **({"terms": median_terms(terms, part)} if terms is not None else {})}
                     for label, part in zip(("low", "mid", "high"), thirds)}
    return out


def store_attributes(names: list[str], basins: list[str], store: str | Path | None = None) -> dict:
    """``{attribute: {basin: value}}`` from the CAMELS-US store."""
    import xarray as xr

    store = store or os.environ.get("DPLJAX_CAMELS_US") or HERE.parent.parent / "shared" / "data" / "camels_us.zarr"
    ds = xr.open_zarr(store)
    missing = [n for n in names if n not in ds]
    if missing:
        raise ValueError(f"{store} has no attribute {missing}")
    have = {str(b) for b in ds["basin"].values}
    absent = sorted(set(basins) - have)
    if absent:
        raise ValueError(f"{store} has no basins {absent[:10]}")
    sub = ds[names].sel(basin=basins).load()
    return {n: dict(zip(basins, np.asarray(sub[n].values, float))) for n in names}


def lines(result: dict) -> list[str]:
    rows = [f"{result['source']} against {result['anchor']}:{result['series']} ({result['series_what']})"]
    for k, v in result.get("left_out", {}).items():
        if v["n_basins"]:
            rows.append(f"{k}: {v['n_basins']} of the run's basins are not in the published scores, left out")
    def one(k, r):
        t = r.get("terms")
        return (f"{k}: {r['n_basins']} basins, median NSE {r['median_nse']:.4f} against "
                f"{r['anchor_median_nse']:.4f}, paired median difference {r['median_paired_difference']:+.4f}, "
                f"better in {r['better_in']} of {r['n_basins']}"
                + (f"; run's median r {t['r']:.3f}, alpha {t['alpha']:.3f}, 1-NSE terms: timing "
                   f"{t['timing']:.3f}, variability {t['variability']:.3f}, volume {t['volume']:.3f}" if t else ""))
    parts = list(result["parts"].items()) + ([("pooled", result["pooled"])] if "pooled" in result else [])
    for k, r in parts:  # the last row holds the pooled basins (the only part of a single run)
        rows.append(one(k, {**r, "terms": result["terms"]} if k == parts[-1][0] and "terms" in result else r))
    for name, terciles in result.get("by", {}).items():
        for label, r in terciles.items():
            rows.append(one(f"{name} {label} ({r['range'][0]:.3g}-{r['range'][1]:.3g})", r))
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source")
    p.add_argument("--anchor", default="kratzert2019")
    p.add_argument("--series", default="pub_lstm")
    p.add_argument("--common", action="store_true",
                   help="compare on the basins both have (the run's others are listed as left out)")
    p.add_argument("--by", help="attributes, comma-separated: pair each tercile of the basins by each")
    p.add_argument("--store", help="the CAMELS-US store for --by (default $DPLJAX_CAMELS_US)")
    p.add_argument("--decompose", action="store_true",
                   help="the run's median terms of 1 - NSE (timing, variability, volume), pooled and per tercile")
    p.add_argument("--out", help="write the comparison here as JSON")
    args = p.parse_args(argv)
    result = compare(args.source, args.anchor, args.series, common=args.common,
                     by=args.by.split(",") if args.by else None, store=args.store,
                     decompose=args.decompose)
    print("\n".join(lines(result)))
    if args.out:
        import subprocess
        import sys

        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
        record = {"what": "python -m benchmarks.anchor " + " ".join(sys.argv[1:] if argv is None else argv),
                  "git_commit": commit or None, **result}
        Path(args.out).write_text(json.dumps(record, indent=1))
    return result


if __name__ == "__main__":
    main()
