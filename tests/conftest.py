"""Shared fixtures: tiny randomly initialised codecs and the images shipped in the repo."""
import functools
import os
import pathlib

# Several CPU devices for the sharding tests, and XLA's backend optimisation level 1: at level 0
# compiling is cheapest, but the decoding tests then run unoptimised machine code for most of
# their time (the multi-host main job ran in less than half the time at level 1; level 2, the
# default, compiles slower still).
# Tests whose time is all compiling a large model pass level 0 to that one compile. Must be set
# before JAX is imported; `xla_flags_for` gives subprocesses the same.
TEST_XLA_OPT = "--xla_backend_optimization_level=1"


def xla_flags_for(devices: int) -> str:
  """XLA_FLAGS of a test process with `devices` CPU devices."""
  return f"--xla_force_host_platform_device_count={devices} {TEST_XLA_OPT}"


os.environ.setdefault("XLA_FLAGS", xla_flags_for(4))

import tempfile  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Compiling dominates these tests (tiny models, few steps). The persistent cache lets a
# re-created jitted function with the same program (e.g. the train step of a resumed run)
# skip XLA's compile; it is keyed by the program, flags and jax version.
jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "dcic_jax_test_xla_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

REPO = pathlib.Path(__file__).resolve().parent.parent
IMAGES = REPO / "data" / "images"
PHOTOS = REPO / "data" / "photos"
SHIPPED = REPO / "checkpoints"


@pytest.fixture(scope="session")
def image():
  """A real 256x384 photo crop (Kodak kodim23), uint8 [H, W, 3]."""
  from dcic_jax.data.images import load_rgb
  return load_rgb(IMAGES / "kodim23_crop.png")


@functools.lru_cache(maxsize=None)
def tiny_codec(codec_id: str, seed: int = 0, N: int = 16, M: int = 24):
  """A randomly initialised small codec with coding tables (cached: compiling is the slow part)."""
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.codecs.registry import make_codec
  module = make_codec(codec_id, N=N, M=M)
  params = jax.jit(module.init)(jax.random.PRNGKey(seed), np.zeros((1, 64, 64, 3), np.float32))["params"]
  return codec_lib.make_codec_from_params(codec_id, dict(N=N, M=M), params)


@pytest.fixture(scope="session", params=["bmshj2018", "mbt2018-mean"])
def codec(request):
  return tiny_codec(request.param)
