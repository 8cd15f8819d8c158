"""A training run killed with SIGKILL in the middle and resumed from the command line ends with
exactly the parameters of an uninterrupted run with the same seed."""
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

from conftest import EXE
from dpljax.checkpoint import read_checkpoint_meta

ROOT = Path(__file__).resolve().parents[1]
# 3 epochs x 400 iterations, a checkpoint every epoch; small enough to take seconds.
ARGS = ["model.nmul=2", "net.hidden=[16]", "train.epochs=3", "train.iters_per_epoch=400",
        "train.batch_basins=4", "train.window=365", "train.warmup=365", "train.progress=false",
        "train.seed=3", "train.checkpoint_every=1", "data.test=[1999-10-01,2000-09-30]",
        "data.test_warmup_days=365"]
ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def _weights(run_dir):
    with np.load(run_dir / "weights.npz") as z:
        return {k: z[k] for k in z.files if k.startswith("leaf_")}


def test_sigkill_then_resume_gives_identical_parameters(tmp_path):
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    ref = subprocess.Popen([str(EXE), *ARGS, f"hydra.run.dir={ref_dir}"], cwd=ROOT, env=ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = subprocess.Popen([str(EXE), *ARGS, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = run_dir / "checkpoints" / "last.npz"
    deadline = time.monotonic() + 300
    while not last.exists():  # the end of epoch 1; epochs 2 and 3 are still to come
        assert victim.poll() is None, victim.communicate()[0][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    out = victim.communicate()[0]
    assert victim.returncode == -signal.SIGKILL, out[-3000:]
    step = read_checkpoint_meta(last)["step"]
    assert step in (400, 800), step  # killed after a checkpoint and before the end
    assert not (run_dir / "weights.npz").exists()
    # Resume: only the run directory and train.resume; the saved config.yaml supplies the rest.
    res = subprocess.run([str(EXE), "train.resume=true", f"hydra.run.dir={run_dir}"], cwd=ROOT,
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert f"resumed from {last} at step {step} of 1200" in res.stdout
    assert ref.wait(timeout=600) == 0, ref.communicate()[0][-3000:]
    a, b = _weights(ref_dir), _weights(run_dir)
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    assert read_checkpoint_meta(last)["step"] == 1200
    # The continued run's bookkeeping is that of one run: 3 epochs, in order.
    import json

    hist_a = json.loads((ref_dir / "train_log.json").read_text())
    hist_b = json.loads((run_dir / "train_log.json").read_text())
    assert [(h["epoch"], h["step"], h["loss"]) for h in hist_b] == [(h["epoch"], h["step"], h["loss"]) for h in hist_a]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from_step"] == step and summary["steps"] == 1200
    assert "resumed" in json.loads((run_dir / "run_info.json").read_text())
