"""The embedded demo: compress the shipped images with each shipped codec, decode, measure."""
import json
import pathlib

import tqdm

from dcic_jax import evaluate
from dcic_jax.codecs import codec as codec_lib
from dcic_jax.data.images import list_images
from dcic_jax.entropy.bitstream import write_atomic


def run(checkpoints: list[str], images_dir: str, out_dir, seed: int = 0) -> dict:
  out_dir = pathlib.Path(out_dir)
  images = list_images(images_dir)
  results_path = out_dir / "results.json"
  results = json.loads(results_path.read_text()) if results_path.is_file() else {}
  for ckpt in tqdm.tqdm(checkpoints, desc="demo codecs"):
    name = pathlib.Path(ckpt).name
    if name in results:  # done in an earlier run of this workdir
      continue
    codec = codec_lib.load(ckpt)
    rows = evaluate.evaluate_codec(codec, name, images, out_dir / name, seed=seed)
    results[name] = dict(summary=evaluate.summarize(rows), rows=[r.__dict__ for r in rows])
    write_atomic(results_path, (json.dumps(results, indent=1) + "\n").encode())
  table = evaluate.markdown_table({k: v["summary"] for k, v in results.items()})
  report = out_dir / "report.md"
  write_atomic(report, (f"# dcic_jax demo\n\nImages: `{images_dir}` ({len(images)}). "
                        f"Rates are real .dcic file sizes.\n\n{table}\n").encode())
  print(table)
  print(f"\nreport: {report}")
  return results
