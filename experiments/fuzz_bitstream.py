"""Fuzzes the .dcic decoder with CRC-fixed mutants of valid files of every registered codec.

  nice -n 10 python experiments/fuzz_bitstream.py [--mutants 100000] [--workers 2] [--seed 0]
  python experiments/fuzz_bitstream.py --checkpoint DIR [--checkpoint DIR ...]   # other exports

Anyone can recompute a CRC32, so every mutant here carries a correct one: the CRC cannot save the
decoder, its own checks must. Mutants change header fields (sizes, padding, seed, string count and
lengths, raw header bytes) and payloads (bit flips, overwritten, zeroed, truncated, extended,
empty or spliced strings) of valid files: three per codec (two photo crops, one flat image), coded
by the shipped checkpoint of each registered codec, or by the exports given with --checkpoint (an
imported CompressAI or official TCM model, say). Decodes run in persistent worker processes
(each decodes many mutants; restarted after a crash), so an abort (signal 6) or a hang is
caught and counted. A decode is a hang when its worker spends over --timeout seconds of CPU time
on it (or 6x that in wall time): CPU time, because this 2-core machine is shared and a starved
worker's wall time says nothing about the decoder. Prints the counts by outcome and codec,
mutants per second and the workers' peak RSS, every --report mutants and at the end; writes every
mutant that was not refused or decoded to --cases for replay.

Outcomes: refused (one-line UserError), decoded, traceback (any other exception), abort (the
process died on a signal or exited), hang (killed). docs/reliability.md.
"""
import argparse
import collections
import multiprocessing as mp
import os
import pathlib
import resource
import sys
import time
import traceback
import zlib

import numpy as np
import tqdm

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from dcic_jax.entropy import bitstream  # noqa: E402

OUTCOMES = ("refused", "decoded", "traceback", "abort", "hang")
SIZES = (0, 1, 2, 15, 16, 17, 63, 64, 65, 127, 128, 255, 256, 1023, 1024, 4095, 4096, 7680, 8192,
         16384, 32767, 65535, 65536, 2**21, 2**35 - 1)
STRATEGIES = ("size", "padding", "seed", "lengths", "strings", "bits", "bytes", "truncate", "extend",
              "empty", "header_bytes", "splice")


# ---- mutants ----
class Parts:
  """A version-2 file as its fields, so that a mutant can change one and still be serialised."""

  def __init__(self, data: bytes):
    header, strings = bitstream.unpack(data)
    self.codec = bitstream._name(header.codec_id, bitstream.CODEC_CODES)
    self.fingerprint = header.fingerprint
    self.sizes = [header.height, header.width, header.padded_height - header.height,
                  header.padded_width - header.width]
    self.seed = header.seed
    self.prng = bitstream._name(header.prng_impl, bitstream.PRNG_CODES)
    self.strings = [bytes(s) for s in strings]
    self.lengths = None  # None: the true lengths of `strings`

  def head(self) -> bytes:
    lengths = [len(s) for s in self.strings] if self.lengths is None else self.lengths
    return b"".join([bitstream.MAGIC, bytes([bitstream.FORMAT_VERSION]), self.codec, self.fingerprint,
                     *(bitstream._varint(v) for v in self.sizes), bitstream._varint(self.seed), self.prng,
                     bytes([len(self.strings) if self.lengths is None else len(self.lengths)]),
                     *(bitstream._varint(v) for v in lengths)])

  def file(self, head: bytes | None = None) -> bytes:
    head = self.head() if head is None else head
    payload = b"".join(self.strings)
    return head + zlib.crc32(payload, zlib.crc32(head)).to_bytes(4, "little") + payload


def _pad_for(n: int) -> int:
  return -(-n // 64) * 64 - n


def mutate(data: bytes, rng: np.random.Generator, others: list[bytes]) -> tuple[str, bytes]:
  """(strategy, a CRC-fixed mutant of the valid file `data`); `others` feed the splices."""
  p = Parts(data)
  kind = STRATEGIES[rng.integers(len(STRATEGIES))]
  payload = b"".join(p.strings)
  if kind == "size":
    for i in rng.choice(2, size=rng.integers(1, 3), replace=False):
      p.sizes[i] = int(rng.choice(SIZES)) if rng.random() < 0.7 else int(rng.integers(1, 65536))
      p.sizes[i + 2] = _pad_for(p.sizes[i]) if rng.random() < 0.8 else int(rng.integers(0, 1100))
  elif kind == "padding":
    p.sizes[2 + rng.integers(2)] = int(rng.choice([0, 1, 63, 64, 1023, 1024, int(rng.integers(0, 2**20))]))
  elif kind == "seed":
    p.seed = int(rng.choice([0, 2**64 - 1, 2**64, 2**70])) if rng.random() < 0.5 else int(rng.integers(0, 2**63))
  elif kind == "lengths":
    p.lengths = [len(s) for s in p.strings]
    i = rng.integers(len(p.lengths))
    p.lengths[i] = int(rng.choice([0, 1, 3, 4, len(payload) + 1, 2**32, max(p.lengths[i] + int(rng.integers(-8, 9)), 0)]))
    if rng.random() < 0.5:  # make the payload agree with the lie
      p.strings = [payload[:p.lengths[0]]] if len(p.lengths) == 1 else p.strings
  elif kind == "strings":
    cuts = np.sort(rng.integers(0, len(payload) + 1, size=rng.integers(1, 17)))
    p.strings = [payload[a:b] for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(payload)])][:16]
  elif kind == "bits":
    b = bytearray(payload)
    for _ in range(rng.integers(1, 9)):
      if b:
        j = rng.integers(len(b))
        b[j] ^= 1 << rng.integers(8)
    p.strings = [bytes(b)]
  elif kind == "bytes":
    b = bytearray(payload)
    if b:
      j = rng.integers(len(b))
      n = int(rng.integers(1, max(len(b) - j, 1) + 1))
      fill = rng.choice(["zero", "ones", "random"])
      b[j:j + n] = (bytes(n) if fill == "zero" else b"\xff" * n if fill == "ones"
                    else rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    p.strings = [bytes(b)]
  elif kind == "truncate":
    n = int(rng.integers(1, len(payload) + 1)) if payload else 0
    p.strings = [payload[n:] if rng.random() < 0.3 else payload[:len(payload) - n]]
  elif kind == "extend":
    n = int(rng.choice([1, 2, 3, 4, 8, 12, 64, 4096]))
    p.strings = [payload + (bytes(n) if rng.random() < 0.5 else rng.integers(0, 256, n, dtype=np.uint8).tobytes())]
  elif kind == "empty":
    p.strings = [b""]
    if rng.random() < 0.5:
      p.sizes = [int(rng.choice(SIZES[3:22]))] * 2 + [0, 0]
      p.sizes[2:] = [_pad_for(p.sizes[0])] * 2
  elif kind == "header_bytes":
    head = bytearray(p.head())
    for _ in range(rng.integers(1, 4)):
      head[rng.integers(len(head))] = int(rng.integers(256))
    return kind, p.file(bytes(head))
  else:  # splice: another valid file's payload under this header
    p.strings = [b"".join(Parts(others[rng.integers(len(others))]).strings)]
  return kind, p.file()


def decode_mutants(codec, files: list[bytes], n: int, rng: np.random.Generator) -> collections.Counter:
  """Decodes n mutants of `files` in this process: counts "decoded" and "refused" (a one-line
  UserError); any other exception propagates. The bounded in-process form of the run below (no
  abort or hang detection), for the tests."""
  from dcic_jax.errors import UserError
  outcomes = collections.Counter()
  for _ in range(n):
    _, data = mutate(files[rng.integers(len(files))], rng, files)
    try:
      decoded = codec.decompress(data)
    except UserError as e:
      if "\n" in str(e):
        raise AssertionError(f"a refusal of more than one line: {e!r}") from None
      outcomes["refused"] += 1
    else:
      if decoded.image.dtype != np.uint8:
        raise AssertionError(f"decoded to {decoded.image.dtype}")
      outcomes["decoded"] += 1
  return outcomes


# ---- valid files ----
def shipped_checkpoints() -> dict[str, pathlib.Path]:
  """The lowest-rate shipped export of every registered codec."""
  from dcic_jax.codecs.registry import codec_ids
  out = {}
  for cid in codec_ids():
    found = sorted((REPO / "checkpoints").glob(f"{cid}-q*/codec.json"))
    if not found:
      raise SystemExit(f"no shipped checkpoint for {cid}")
    out[cid] = found[0].parent
  return out


def given_checkpoints(dirs: list[str]) -> dict[str, pathlib.Path]:
  """The exports named on the command line, keyed by their codec id (one export per codec id)."""
  import json
  from dcic_jax.errors import UserError
  out = {}
  for d in dirs:
    path = pathlib.Path(d)
    try:
      cid = json.loads((path / "codec.json").read_text())["codec_id"]
    except (OSError, ValueError, KeyError) as e:
      raise UserError(f"{d} is not a codec export ({type(e).__name__}: {e})") from None
    if cid in out:
      raise UserError(f"{out[cid]} and {d} are both {cid} exports: give one per codec id")
    out[cid] = path
  return out


def valid_images() -> list[np.ndarray]:
  from dcic_jax.data.images import load_rgb
  photo = load_rgb(REPO / "data" / "images" / "kodim23_crop.png")
  return [photo[:64, :64], photo[100:148, 200:280], np.full((64, 64, 3), 128, np.uint8)]


# ---- workers ----
def _worker(conn, checkpoints: dict) -> None:
  """Decodes (codec id, bytes) jobs until told to stop; answers (outcome, detail, peak RSS kB)."""
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.errors import UserError
  codecs = {cid: codec_lib.load(path) for cid, path in checkpoints.items()}
  files = {cid: [c.compress(im, seed=i) for i, im in enumerate(valid_images())] for cid, c in codecs.items()}
  for cid, c in codecs.items():  # compile every valid shape before the timed jobs
    for f in files[cid]:
      c.decompress(f)
  conn.send(files)
  while True:
    job = conn.recv()
    if job is None:
      return
    cid, data = job
    try:
      codecs[cid].decompress(data)
      outcome, detail = "decoded", ""
    except UserError as e:
      outcome, detail = "refused", str(e)[:200]
    except Exception as e:  # what the fuzz is for
      outcome, detail = "traceback", "".join(traceback.format_exception_only(e)).strip()[:500]
    conn.send((outcome, detail, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def _cpu_seconds(pid: int) -> float:
  """User + system CPU time of a live process (Linux /proc), all its threads."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
  except OSError:
    return 0.0
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Worker:
  def __init__(self, checkpoints):
    ctx = mp.get_context("spawn")
    self.conn, child = ctx.Pipe()
    self.proc = ctx.Process(target=_worker, args=(child, checkpoints), daemon=True)
    self.proc.start()
    child.close()
    self.files = self.conn.recv()  # waits for the warm-up
    self.job = None

  def stop(self) -> None:
    try:
      self.conn.send(None)
    except OSError:
      pass
    self.proc.join(5)
    if self.proc.is_alive():
      self.proc.kill()
      self.proc.join()


def run(n_mutants: int, n_workers: int, seed: int, timeout: float, report_every: int, cases=None,
        out=sys.stdout, checkpoints: dict | None = None) -> dict:
  checkpoints = checkpoints or shipped_checkpoints()
  t_start = time.time()
  workers = [Worker(checkpoints) for _ in range(n_workers)]
  files = workers[0].files
  print(f"{n_workers} workers ready in {time.time() - t_start:.0f} s; valid files: "
        + ", ".join(f"{cid} {[len(f) for f in fs]} B" for cid, fs in files.items()), file=out, flush=True)
  everything = [f for fs in files.values() for f in fs]
  rng = np.random.default_rng(seed)
  counts = collections.Counter()
  examples = {}
  peak_kb, done, sent = 0, 0, 0
  t0 = time.time()
  bar = tqdm.tqdm(total=n_mutants, desc="mutants", unit="file", file=sys.stderr)

  def dispatch(w):
    nonlocal sent
    cid = list(files)[rng.integers(len(files))]
    kind, data = mutate(files[cid][rng.integers(len(files[cid]))], rng, everything)
    w.conn.send((cid, data))
    w.job, w.t, w.cpu = (cid, kind, data), time.time(), _cpu_seconds(w.proc.pid)
    sent += 1

  for w in workers:
    dispatch(w)
  while done < n_mutants:
    ready = mp.connection.wait([w.conn for w in workers] + [w.proc.sentinel for w in workers], timeout=0.5)
    for i, w in enumerate(workers):
      outcome = None
      if w.conn in ready:
        try:
          outcome, detail, rss = w.conn.recv()
          peak_kb = max(peak_kb, rss)
        except (EOFError, OSError):
          pass
      if outcome is None and (not w.proc.is_alive() or w.proc.sentinel in ready):
        w.proc.join()
        outcome, detail = "abort", f"exit code {w.proc.exitcode}"
      elif outcome is None and (_cpu_seconds(w.proc.pid) - w.cpu > timeout or time.time() - w.t > 6 * timeout):
        cpu, wall = _cpu_seconds(w.proc.pid) - w.cpu, time.time() - w.t
        w.proc.kill()
        w.proc.join()
        outcome, detail = "hang", f"killed after {cpu:.0f} s CPU, {wall:.0f} s wall"
      if outcome is None:
        continue
      cid, kind, data = w.job
      counts[(cid, outcome)] += 1
      counts[("strategy:" + kind, outcome)] += 1
      done += 1
      bar.update(1)
      if outcome not in ("refused", "decoded"):
        examples.setdefault((cid, outcome, detail[:80]), data.hex())
        print(f"{outcome}: {cid} {kind}: {detail}", file=out, flush=True)
        if cases:
          pathlib.Path(cases).mkdir(parents=True, exist_ok=True)
          (pathlib.Path(cases) / f"{done:06d}_{cid}_{outcome}_{kind}.dcic").write_bytes(data)
      if outcome in ("abort", "hang"):
        workers[i] = w = Worker(checkpoints)
      if done % report_every == 0 or done == n_mutants:
        _table(counts, done, time.time() - t0, peak_kb, out)
      if sent < n_mutants:
        dispatch(w)
  bar.close()
  for w in workers:
    w.stop()
  peak_kb = max(peak_kb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
  _table(counts, done, time.time() - t0, peak_kb, out)
  return dict(counts=counts, done=done, peak_kb=peak_kb, examples=examples)


def _table(counts, done, seconds, peak_kb, out) -> None:
  rows = sorted({k for k, _ in counts})
  print(f"\n{done} CRC-fixed mutants in {seconds:.0f} s ({done / max(seconds, 1e-9):.0f}/s); "
        f"worker peak RSS {peak_kb / 1024:.0f} MiB", file=out)
  print(f"| {'codec / strategy':<22} | " + " | ".join(f"{o:>9}" for o in OUTCOMES) + " |", file=out)
  print("|" + "-" * 24 + "|" + "|".join("-" * 11 for _ in OUTCOMES) + "|", file=out)
  for r in [r for r in rows if not r.startswith("strategy:")] + ["all"] + [r for r in rows if r.startswith("strategy:")]:
    cells = [sum(v for (k, o), v in counts.items() if o == oc and not k.startswith("strategy:"))
             if r == "all" else counts[(r, oc)] for oc in OUTCOMES]
    print(f"| {r.replace('strategy:', '  '):<22} | " + " | ".join(f"{c:>9}" for c in cells) + " |", file=out)
  out.flush()


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--mutants", type=int, default=100_000)
  ap.add_argument("--workers", type=int, default=2)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--timeout", type=float, default=10.0, help="CPU seconds after which a decode is a hang")
  ap.add_argument("--cases", default=None, help="folder for the mutants that were neither refused nor decoded")
  ap.add_argument("--report", type=int, default=5000, help="print the table every this many mutants")
  ap.add_argument("--checkpoint", action="append", default=[],
                  help="fuzz files of this export instead of the shipped ones (repeatable)")
  args = ap.parse_args()
  result = run(args.mutants, args.workers, args.seed, args.timeout, args.report, args.cases,
               checkpoints=given_checkpoints(args.checkpoint) if args.checkpoint else None)
  bad = sum(v for (k, o), v in result["counts"].items() if o in ("traceback", "abort", "hang")
            and not k.startswith("strategy:"))
  sys.exit(1 if bad else 0)


if __name__ == "__main__":
  from dcic_jax.errors import exit_code
  sys.exit(exit_code(main))
