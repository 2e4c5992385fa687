"""Golden files: a shipped image through shipped codecs gives the same .dcic bytes and the same
decoded pixels as when these hashes were pinned (x86-64, XLA:CPU; the default XLA flags and the
tests' give the same hashes, while backend optimisation level 0 rounds a tcm pixel apart).

A change that moves either hash changes what users' files contain or decode to; if it is meant,
say so in CHANGELOG.md and pin the new hashes. The same image through two codec families: the CNN
hyperprior (mbt2018-mean) and the hybrid Transformer codec (tcm). Files of format version 2 (the
integer networks' old grids) are pinned too, at the hashes they had before version 3: old files
must keep decoding to what they did.
"""
import hashlib

import pytest

from conftest import IMAGES, SHIPPED
from dcic_jax.codecs import codec as codec_lib
from dcic_jax.data.images import load_rgb

GOLDEN = {  # (codec, format version): (file bytes, sha256 of the file, sha256 of the decoded uint8 pixels)
    ("mbt2018-mean-q2", 3): (2809, "c3d8709ba9a45a77d74e2aa1f2c014a90ddd10b9f0b6ceb6c91abde36b603f9e",
                             "c32e2d387288a0623c054f37f77a5a531db9043de347fd7b56d38d93694c10d5"),
    ("tcm-q1", 3): (1485, "4ffae8ca9710ea3c46ddd54ebe20f2bc3cad188b717c02c0072c9fac34e5a024",
                    "af7cc8a7c2bd901977958136d6aa3d012c8d130b4b3420ab6a95dbe6bef4a787"),
    ("mbt2018-mean-q2", 2): (2809, "a832180c94cd84b4ca366c3a968f0597e138701b150507766ad7da92aa8383de",
                             "456798533bdfb7de9f484c01b67ae74149e372e0d0587649a1c6a475b31290c6"),
    ("tcm-q1", 2): (1489, "e89f0e1f4f26e90be1d42cf7731f0621a21a80c6b366b86bcad219d7903d1769",
                    "056228040d4353055eb9ce5a46bbffba15f018a4f5f98cc7515826859a5ce759"),
}


@pytest.mark.parametrize("name,version", sorted(GOLDEN))
def test_shipped_image_codes_and_decodes_to_the_pinned_bytes(name, version):
  size, file_hash, pixels_hash = GOLDEN[name, version]
  codec = codec_lib.load(SHIPPED / name)
  data = codec.compress(load_rgb(IMAGES / "kodim15_crop.png"), seed=7, version=version)
  assert (len(data), hashlib.sha256(data).hexdigest()) == (size, file_hash)
  decoded = codec.decompress(data).image
  assert hashlib.sha256(decoded.tobytes()).hexdigest() == pixels_hash
