"""One line naming this machine's CPU for benchmark headers: ratios against PyTorch move with the
CPU model and its vector extensions (docs/tcm.md, docs/benchmarks.md), so every table says which."""
import os


def describe() -> str:
  """'AMD EPYC, 2 cores, AVX-512 (bf16, vnni)' from /proc/cpuinfo; less where it is not there."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  model, flags = "unknown CPU", set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown CPU":
          model = " ".join(value.split())
        elif key.strip() == "flags" and not flags:
          flags = set(value.split())
  except OSError:
    pass
  if "avx512f" in flags:
    extras = [name for name, flag in (("bf16", "avx512_bf16"), ("vnni", "avx512_vnni"), ("amx", "amx_tile"))
              if flag in flags]
    isa = "AVX-512" + (f" ({', '.join(extras)})" if extras else "")
  else:
    isa = "AVX2" if "avx2" in flags else "no AVX2"
  return f"{model}, {cores} cores, {isa}"


if __name__ == "__main__":
  print(describe())
