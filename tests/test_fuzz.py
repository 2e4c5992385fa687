"""A bounded run of experiments/fuzz_bitstream.py's mutator, in process, on tiny codecs of every
registered codec: each CRC-fixed mutant decodes or is refused with a UserError, nothing else.
(The long run, in worker processes that also catch aborts and hangs, is the experiment script.)"""
import collections
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import IMAGES, REPO, tiny_codec
from dcic_jax.codecs.registry import codec_ids
from dcic_jax.errors import UserError

sys.path.insert(0, str(REPO / "experiments"))
import fuzz_bitstream  # noqa: E402

MUTANTS = 150  # per codec


@pytest.mark.parametrize("codec_id", codec_ids())
def test_crc_fixed_mutants_are_refused_or_decoded(codec_id):
  codec = tiny_codec(codec_id)
  photo = np.asarray(Image.open(IMAGES / "kodim23_crop.png"))
  files = [codec.compress(photo[:64, :64], seed=1), codec.compress(np.full((64, 64, 3), 90, np.uint8))]
  outcomes = fuzz_bitstream.decode_mutants(codec, files, MUTANTS, np.random.default_rng(0))
  assert outcomes["refused"] > MUTANTS // 2, outcomes


def test_mutants_carry_a_correct_crc_and_cover_every_strategy():
  codec = tiny_codec("bmshj2018")
  data = codec.compress(np.zeros((64, 64, 3), np.uint8))
  rng = np.random.default_rng(1)
  kinds = collections.Counter()
  for _ in range(400):
    kind, mutant = fuzz_bitstream.mutate(data, rng, [data])
    kinds[kind] += 1
    try:
      codec.decompress(mutant)
    except UserError as e:
      assert "CRC" not in str(e) or kind == "header_bytes", (kind, e)
  assert set(kinds) == set(fuzz_bitstream.STRATEGIES)
