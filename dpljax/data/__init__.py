"""Dataset contract, validation, the embedded sample, normalisation and batch sampling."""
from .contract import ATTRIBUTES_35, DataError
from .dataset import Arrays, DataConfig, fit_normalizer, load, prepare
from .normalize import Normalizer
from .sample import SAMPLE_BASINS, load_sample
from .sampler import iterations_per_epoch, sample_batch

__all__ = ["ATTRIBUTES_35", "Arrays", "DataConfig", "DataError", "Normalizer", "SAMPLE_BASINS",
           "fit_normalizer", "iterations_per_epoch", "load", "load_sample", "prepare", "sample_batch"]
