"""The stages behind `dcic_jax.main`; each is resumable from the workdir."""
import pathlib

import ml_collections


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  trained = config.train_codec.steps > 0
  if trained:
    from dcic_jax.train import train_codec
    _, params = train_codec(config, str(workdir / "codec"))
    if config.export_dir:
      from dcic_jax.codecs.codec import export_trained
      export_trained(config, params, config.export_dir)
      print(f"exported codec to {config.export_dir}")
  if config.eval.checkpoints or (trained and config.export_dir):
    from dcic_jax import demo
    ckpts = [c for c in config.eval.checkpoints.split(",") if c] or [config.export_dir]
    demo.run(ckpts, config.eval.images_dir, workdir / "demo", seed=config.eval.seed)
