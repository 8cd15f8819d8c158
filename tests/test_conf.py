"""Every experiment in conf/ composes with Hydra and builds (configs are checked, no data read)."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dpljax.experiment import SECTIONS, build

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def composed(*overrides):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=list(overrides))
    OmegaConf.set_struct(cfg, False)
    del cfg["name"]  # resolved by Hydra at run time
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_builds(name):
    config = composed(f"experiment={name}")
    exp = build({k: config[k] for k in SECTIONS})
    if "dynamic" in name:
        assert exp.dpl.space.dynamic == ("beta", "betaet") and exp.net_name == "lstm"
    assert bool(config["pub"]) == ("pub" in name)  # an experiment's top-level keys win
    if name.startswith("camels531"):
        assert config["data"]["basins"] == "in_531"


def test_default_is_the_sample_experiment():
    config = composed()
    assert config["data"]["source"] == "sample" and config["net"]["name"] == "mlp"
    assert config["model"]["nmul"] == 16 and config["pub"] is None
    assert composed("model.nmul=4", "train.epochs=2")["model"]["nmul"] == 4
