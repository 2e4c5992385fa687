"""Entry point: python -m dcic_jax.main --config=configs/<name>.py --workdir=<dir>."""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from dcic_jax.errors import UserError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, outputs and the report (resumable).")
flags.DEFINE_bool("dry_run", False, "Print the study's size and a decode wall-time estimate on "
                  "this job's devices (docs/scaling.md), then exit.")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                  "jax.distributed: auto-detect a TPU pod / SLURM / Open MPI launch or the "
                  "DCIC_COORDINATOR_ADDRESS environment (docs/scaling.md); on; off.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  from dcic_jax import pipeline, sharding
  try:
    sharding.initialize(FLAGS.distributed)
    if FLAGS.dry_run:
      pipeline.dry_run(FLAGS.config)
    else:
      pipeline.run(FLAGS.config, FLAGS.workdir)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
