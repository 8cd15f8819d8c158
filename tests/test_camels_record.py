"""benchmarks.camels record: a result names the command that trained it, overrides included."""
import yaml

from benchmarks import camels


def test_the_recorded_command_keeps_what_was_trained_and_drops_where(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
        ["experiment=camels671_temporal_1h", "net.hidden=256", "net.mlp_hidden=[256,256]",
         "+data.net_forcing=[prcp,srad]", "train.progress=false", "hydra.run.dir=runs/x", "pub.folds=[2]"]))
    assert camels.command(tmp_path, "other_name") == (
        "dpljax experiment=camels671_temporal_1h net.hidden=256 'net.mlp_hidden=[256,256]' "
        "'+data.net_forcing=[prcp,srad]'")
    assert camels.command(tmp_path / "none", "camels531_static") == "dpljax experiment=camels531_static"
