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
    if "dynamic" in name or "hour" in name:  # time-varying beta and betaet from a sequence network
        assert {"beta", "betaet"} <= set(exp.dpl.space.dynamic) and exp.net_name in ("lstm", "lstm_mlp")
    assert bool(config["pub"]) == ("pub" in name)  # an experiment's top-level keys win
    if name.startswith("camels531"):
        assert config["data"]["basins"] == "in_531"


def test_default_is_the_sample_experiment():
    config = composed()
    assert config["data"]["source"] == "sample" and config["net"]["name"] == "mlp"
    assert config["model"]["nmul"] == 16 and config["pub"] is None
    assert composed("model.nmul=4", "train.epochs=2")["model"]["nmul"] == 4


def test_typed_sections_through_one_helper():
    """model, net/loss and optim become typed sections through config.dataclass_section: the
    section's own keys are typed and checked, the rest of an open section are the options of
    what its name selects; every error names the key and the bad value."""
    from dpljax.config import ConfigError, ModelSection, NamedSection, OptimSection, dataclass_section

    m = dataclass_section(ModelSection, "model", {"name": "hbv", "nmul": 4, "dynamic": ["beta"],
                                                  "options": None, "bounds": {"fc": [50, 900]}})
    assert (m.nmul, m.dynamic, m.routing, m.options, m.bounds) == (4, ("beta",), True, {}, {"fc": (50.0, 900.0)})
    net = dataclass_section(NamedSection, "net", {"name": "mlp", "hidden": [8], "dropout": 0.1})
    assert net.name == "mlp" and net.options == {"hidden": [8], "dropout": 0.1}
    opt = dataclass_section(OptimSection, "optim", {"name": "adam", "learning_rate": 1e-3,
                                                    "schedule": {"name": "cosine"}})
    assert opt.options == {"learning_rate": 1e-3} and opt.schedule == {"name": "cosine"}
    for cls, section, values, regex in [
        (ModelSection, "model", {"nmul": 0}, r"model.nmul must be an integer >= 1, got 0"),
        (ModelSection, "model", {"dynamic": "beta"}, r"model.dynamic must be a list of parameter names, got 'beta'"),
        (ModelSection, "model", {"options": [1]}, r"model.options must be a mapping, got \[1\]"),
        (ModelSection, "model", {"bounds": {"fc": [1, float("nan")]}}, r"model.bounds.fc must be a pair"),
        (ModelSection, "model", {"nmull": 2}, r"unknown key\(s\) \['nmull'\] in 'model'"),
        (OptimSection, "optim", {"learning_rate": float("inf")}, r"optim.learning_rate must be a number > 0, got inf"),
        (OptimSection, "optim", {"learning_rate": True}, r"optim.learning_rate must be a number > 0, got True"),
        (OptimSection, "optim", {"schedule": ["cosine"], "learning_rate": 1.0}, r"optim.schedule must be a mapping"),
    ]:
        with pytest.raises(ConfigError, match=regex):
            dataclass_section(cls, section, values)
