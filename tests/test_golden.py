"""Golden files: a shipped image through shipped codecs gives the same .dcic bytes and the same
decoded pixels as when these hashes were pinned (x86-64, XLA:CPU; the default XLA flags and the
tests' give the same hashes, while backend optimisation level 0 rounds a tcm pixel apart).

A change that moves either hash changes what users' files contain or decode to; if it is meant,
say so in CHANGELOG.md and pin the new hashes. The same image through two codec families: the CNN
hyperprior (mbt2018-mean) and the hybrid Transformer codec (tcm).
"""
import hashlib

import pytest

from conftest import IMAGES, SHIPPED
from dcic_jax.codecs import codec as codec_lib
from dcic_jax.data.images import load_rgb

GOLDEN = {  # codec: (file bytes, sha256 of the file, sha256 of the decoded uint8 pixels)
    "mbt2018-mean-q2": (2809, "a832180c94cd84b4ca366c3a968f0597e138701b150507766ad7da92aa8383de",
                        "456798533bdfb7de9f484c01b67ae74149e372e0d0587649a1c6a475b31290c6"),
    "tcm-q1": (1489, "e89f0e1f4f26e90be1d42cf7731f0621a21a80c6b366b86bcad219d7903d1769",
               "056228040d4353055eb9ce5a46bbffba15f018a4f5f98cc7515826859a5ce759"),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_shipped_image_codes_and_decodes_to_the_pinned_bytes(name):
  size, file_hash, pixels_hash = GOLDEN[name]
  codec = codec_lib.load(SHIPPED / name)
  data = codec.compress(load_rgb(IMAGES / "kodim15_crop.png"), seed=7)
  assert (len(data), hashlib.sha256(data).hexdigest()) == (size, file_hash)
  decoded = codec.decompress(data).image
  assert hashlib.sha256(decoded.tobytes()).hexdigest() == pixels_hash
