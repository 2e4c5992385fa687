"""Training scalars: TensorBoard event files (tensorboardX, so no TensorFlow) and, where asked, the
same values as JSON lines (a curve readable without TensorBoard). Only process 0 writes; on other
hosts a `ScalarLog` is a no-op. The codec and the prior trainers both log through it."""
import json
import os

import jax


class ScalarLog:
  """`write(step, {name: value})` → `<prefix>/<name>` scalars in `tb_dir` (+ a line in `jsonl`)."""

  def __init__(self, tb_dir: str, prefix: str, jsonl: str | None = None):
    self.prefix = prefix
    self._writer = self._curve = None
    if jax.process_index() != 0:
      return
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._writer = SummaryWriter(tb_dir)
    if jsonl is not None:
      os.makedirs(os.path.dirname(os.path.abspath(jsonl)), exist_ok=True)
      self._curve = open(jsonl, "a")

  def write(self, step: int, values: dict) -> None:
    values = {k: float(v) for k, v in values.items()}
    if self._writer is not None:
      for name, value in values.items():
        self._writer.add_scalar(f"{self.prefix}/{name}", value, step)
    if self._curve is not None:
      self._curve.write(json.dumps({"step": step, **values}) + "\n")
      self._curve.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
    if self._curve is not None:
      self._curve.close()
    self._writer = self._curve = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
