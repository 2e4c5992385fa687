"""Write 2×-downsampled copies of a folder of training photos (box filter, lossless WebP).

  python experiments/half_photos.py ../shared/data/photos runs/photos_half

The shipped CNN codecs train on these (experiments/train_ladder.py): halving a ~1 MP photo
averages away sensor noise and demosaicking artefacts, and brings its detail per pixel close to
Kodak's 768×512 scans (Ballé et al. also trained on downsampled photos). Lossless WebP keeps the
folder small enough to carry to a leased GPU (18 MB for the 49 shared photos, against 84 MB of
PNGs at full size). Deterministic: the same input gives the same files.
"""
import io
import pathlib
import sys

from PIL import Image

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dcic_jax.data.images import list_images, load_rgb  # noqa: E402
from dcic_jax.io import write_bytes  # noqa: E402


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 2:
    raise SystemExit("usage: python experiments/half_photos.py SRC_DIR DST_DIR")
  src, dst = (pathlib.Path(a) for a in argv)
  dst.mkdir(parents=True, exist_ok=True)
  for path in list_images(src):
    im = Image.fromarray(load_rgb(path))
    im = im.resize((im.width // 2, im.height // 2), Image.Resampling.BOX)
    buf = io.BytesIO()
    im.save(buf, "WEBP", lossless=True, quality=100, method=4)
    write_bytes(dst / (path.stem + ".webp"), buf.getvalue())
  print(f"wrote {len(list_images(dst))} images to {dst}")


if __name__ == "__main__":
  main()
