"""Entry point: python -m dcic_jax.main --config=configs/<name>.py --workdir=<dir>."""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from dcic_jax import limits
from dcic_jax.errors import UserError, report

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, outputs and the report (resumable).")
flags.DEFINE_bool("dry_run", False, "Print the study's size and a decode wall-time estimate on "
                  "this job's devices (docs/scaling.md), then exit.")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                  "jax.distributed: auto-detect a TPU pod / SLURM / Open MPI launch or the "
                  "DCIC_COORDINATOR_ADDRESS environment (docs/scaling.md); on; off.")
flags.mark_flags_as_required(["config", "workdir"])


def _set_up_and_run(job) -> None:
  """Quiet orbax, apply the config's pixel limit, start jax.distributed as --distributed says,
  then `job(config)`; a UserError is one `error:` line and status 2."""
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  from dcic_jax import sharding
  try:
    limits.configure(FLAGS.config.get("max_pixels"))
    sharding.initialize(FLAGS.distributed)
    job(FLAGS.config)
  except UserError as e:
    sys.exit(report(e))


def main(argv):
  del argv
  from dcic_jax import pipeline
  _set_up_and_run(lambda config: pipeline.dry_run(config) if FLAGS.dry_run
                  else pipeline.run(config, FLAGS.workdir))


def _shipped_config(argv):
  """argv with a --config that names no file from here pointed at the shipped config of that name
  (configs/demo.py from any directory), and the shipped root importable for `from configs import`."""
  from dcic_jax import assets
  out = []
  for arg in argv:
    if arg.startswith("--config="):
      path, sep, rest = arg[len("--config="):].partition(":")   # ml_collections' PATH:ARGS form
      arg = f"--config={assets.resolve(path)}{sep}{rest}"
    out.append(arg)
  try:
    root = str(assets.root())
  except UserError:
    return out
  if root not in sys.path:
    sys.path.append(root)
  return out


def parse_flags(argv):
  """absl's parser, its refusals (a bad or missing flag, a config file that does not load) as one
  `error:` line and status 2 instead of its multi-line block."""
  try:
    rest = FLAGS(_shipped_config(argv))
  except flags.Error as e:
    sys.exit(report(UserError(f"{argv[0]}: {e}")))
  try:
    FLAGS.config.keys()   # ml_collections loads the file on first use: a bad one is one line here
  except Exception as e:  # pylint: disable=broad-except  (any error of a user's config file)
    sys.exit(report(UserError(f"{argv[0]}: --config: {str(e).strip().splitlines()[-1].strip()}")))
  return rest


def cli_main(argv) -> None:
  """`dcic run ARGS`: the same program as `python -m dcic_jax.main ARGS`."""
  app.run(main, argv=["dcic run", *argv], flags_parser=parse_flags)


def _train_codec(argv):
  del argv
  from dcic_jax.train import train_and_export

  def job(config):
    export_dir = config.export_dir or os.path.join(FLAGS.workdir, "export")
    print(f"exported the codec to {train_and_export(config, FLAGS.workdir, export_dir)}")
  _set_up_and_run(job)


def train_codec_main(argv) -> None:
  """`dcic train-codec --config=configs/train_codec.py:ID,Q --workdir=DIR`: the codec stage alone
  (train or resume, then export with tables and calibration to config.export_dir, else DIR/export)."""
  app.run(_train_codec, argv=["dcic train-codec", *argv], flags_parser=parse_flags)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
