"""Normalisation of network inputs; the statistics travel with the trained model.

Forcings are z-scored with one mean and standard deviation per variable, pooled over the
training basins and period; precipitation is first transformed ``log10(sqrt(x) + 0.1)``
(the reference practice; it tames the skew). Attributes are z-scored over the training
basins; categorical attributes (e.g. ``dom_land_cover``) become the index of their category
in a vocabulary fixed at fit time. Anything missing (NaN, unknown category) becomes 0 after
scaling, i.e. the training mean. Process-model forcings are *not* normalised.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

LOG_SQRT = ("prcp",)  # variables transformed by log10(sqrt(x) + 0.1) before z-scoring


def log_sqrt(x):
    return np.log10(np.sqrt(np.maximum(x, 0.0)) + 0.1)


def encode_attribute(values: np.ndarray, categories: list[str] | None) -> np.ndarray:
    """Numeric attribute as float; a categorical one as its index in ``categories`` (NaN if absent)."""
    if categories is None:
        return np.asarray(values, dtype=np.float64)
    lookup = {c: float(i) for i, c in enumerate(categories)}
    return np.array([lookup.get(str(v), np.nan) for v in values], dtype=np.float64)


@dataclass
class Normalizer:
    dynamic: dict[str, tuple[float, float]] = field(default_factory=dict)  # var -> (mean, std)
    static: dict[str, tuple[float, float]] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, dynamic: dict[str, np.ndarray], attrs: xr.Dataset, attributes) -> "Normalizer":
        """``dynamic``: var -> training-period array (any shape); ``attrs``: training basins."""
        norm = cls()
        for v, a in dynamic.items():
            a = log_sqrt(a) if v in LOG_SQRT else np.asarray(a, dtype=np.float64)
            norm.dynamic[v] = (float(np.nanmean(a)), float(np.nanstd(a)))
        for name in attributes:
            vals = attrs[name].values
            if vals.dtype.kind in "OUS":
                norm.categories[name] = sorted({str(x) for x in vals})
            enc = encode_attribute(vals, norm.categories.get(name))
            norm.static[name] = (float(np.nanmean(enc)), float(np.nanstd(enc)))
        return norm

    @staticmethod
    def _z(x, mean_std):
        mean, std = mean_std
        z = (x - mean) / (std if std > 0 else 1.0)
        return np.where(np.isfinite(z), z, 0.0).astype(np.float32)

    def dynamic_inputs(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Stack normalised forcings on a new last axis, in the fitted order."""
        out = []
        for v, ms in self.dynamic.items():
            a = np.asarray(arrays[v], dtype=np.float64)
            out.append(self._z(log_sqrt(a) if v in LOG_SQRT else a, ms))
        return np.stack(out, axis=-1)

    def static_inputs(self, attrs: xr.Dataset) -> np.ndarray:
        """``(basin, n_attributes)`` normalised attributes, in the fitted order."""
        cols = [self._z(encode_attribute(attrs[n].values, self.categories.get(n)), ms)
                for n, ms in self.static.items()]
        return np.stack(cols, axis=-1) if cols else np.zeros((attrs.sizes["basin"], 0), np.float32)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def from_json(cls, path: str | Path) -> "Normalizer":
        d = json.loads(Path(path).read_text())
        return cls(dynamic={k: tuple(v) for k, v in d["dynamic"].items()},
                   static={k: tuple(v) for k, v in d["static"].items()},
                   categories=d.get("categories", {}))
