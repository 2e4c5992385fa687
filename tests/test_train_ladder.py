"""experiments/train_ladder.py: a ladder of rate points in one process, its .npz and re-export."""
import sys

import numpy as np

from conftest import PHOTOS, REPO

sys.path.insert(0, str(REPO / "experiments"))
import train_ladder  # noqa: E402


def test_ladder_exports_every_rate_and_its_npz_re_exports_the_same_codecs(tmp_path, capsys):
  from dcic_jax.codecs import codec as codec_lib
  common = ["--codec", "bmshj2018", "--qualities", "1,4", "--N", "8", "--M", "12",
            "--crop", "64", "--batch", "4", "--data-dir", str(PHOTOS), "--warmup", "1", "--lr", "1e-2"]
  npz = tmp_path / "ladder.npz"
  train_ladder.main(common + ["--steps", "3", "--workdir", str(tmp_path / "wd"),
                              "--out", str(tmp_path / "out"), "--params-npz", str(npz)])
  log = capsys.readouterr().out
  assert "bmshj2018 q1 (λ=0.0018): 3 steps" in log and "bmshj2018 q4 (λ=0.013): 3 steps" in log
  trained = {q: codec_lib.load(tmp_path / "out" / f"bmshj2018-q{q}") for q in (1, 4)}
  # λ reached the loss: the two rate points trained on the same batches differ.
  a, b = (np.asarray(trained[q].params["g_a_layers_0"]["kernel"]) for q in (1, 4))
  assert not np.array_equal(a, b)
  train_ladder.main(common + ["--from-npz", str(npz), "--out", str(tmp_path / "again")])
  for q in (1, 4):
    again = codec_lib.load(tmp_path / "again" / f"bmshj2018-q{q}")
    assert again.fingerprint == trained[q].fingerprint
    assert again.codec_id == "bmshj2018" and again.config["N"] == 8
