"""conf/README.md, the configuration reference, is what ``python -m dpljax.confref`` generates
from conf/: every group, option and key with its default and a description from the YAML comments."""
from pathlib import Path

import pytest
import yaml

from dpljax import confref

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_conf_readme_is_up_to_date():
    expected = confref.render(CONF)
    actual = (CONF / "README.md").read_text() if (CONF / "README.md").exists() else ""
    assert actual == expected, "conf/README.md is out of date: run `python -m dpljax.confref` and commit it"


def test_every_key_and_option_of_conf_is_in_the_reference():
    text = (CONF / "README.md").read_text()

    def keys(d, prefix=""):
        for k, v in d.items():
            if k in ("defaults", "hydra"):
                continue
            full = f"{prefix}{k}"
            if isinstance(v, dict) and v and f"| `{full}` |" not in text:   # a flow mapping is one key
                yield from keys(v, full + ".")
            else:
                yield full

    for path in sorted(CONF.glob("*/*.yaml")):
        group = path.parent.name
        assert f"`{group}={path.stem}`" in text, path
        data = yaml.safe_load(path.read_text()) or {}
        prefix = "" if group == "experiment" else f"{group}."
        for k in keys(data, prefix):
            assert f"| `{k}` |" in text, f"{path}: {k} missing from conf/README.md"


def test_a_key_without_a_comment_is_refused(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "config.yaml").write_text("# top\ndefaults:\n  - train: default\nseed: 1  # a seed\n")
    (tmp_path / "train" / "default.yaml").write_text("# loop\nepochs: 3   # passes\nwindow: 365\n")
    with pytest.raises(confref.ConfRefError, match=r"train/default.yaml: train.window"):
        confref.render(tmp_path)
    (tmp_path / "train" / "default.yaml").write_text(
        "# loop\nepochs: 3   # passes\n# days per window,\n# in the loss\nwindow: [1,\n  2]\n")
    text = confref.render(tmp_path)
    assert "| `train.window` | `[1, 2]` | days per window, in the loss |" in text
    assert "| `seed` | `1` | a seed |" in text and "| [`train`](#train) | `default` |" in text


def test_check_mode_reports_an_outdated_reference(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("# top\nseed: 1  # a seed\n")
    assert confref.main(["--conf", str(tmp_path), "--check"]) == 1
    assert confref.main(["--conf", str(tmp_path)]) == 0
    assert confref.main(["--conf", str(tmp_path), "--check"]) == 0
