"""PyTorch weights into numpy: the one place that reads PyTorch files and converts their layouts.

The importers (CompressAI codecs, diffusion priors, the FID / LPIPS networks) keep their own key
mappings and call this module for the two shared steps: a file → a flat {name: numpy array}
(torch imported lazily, only for `torch.save` files; `.safetensors` read without it), and the
kernel layouts (PyTorch convolutions are OIHW, flax's HWIO; linear weights are [out, in]).
"""
import json
import os
import struct

import numpy as np

from dcic_jax.errors import UserError

TORCH_PIN = "torch==2.13.0"
WRAPPERS = ("state_dict", "model", "ema")  # training checkpoints keep the model's dict under these


class TorchMissing(UserError, ImportError):
  """torch is not installed: one user-error line, also caught by `except ImportError`."""


def import_torch(what: str = "reading PyTorch .bin/.pt checkpoints"):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise TorchMissing(f"{what} needs torch: pip install {TORCH_PIN}") from None
  return torch


_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "BF16": np.uint16,
}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """A .safetensors file as numpy arrays (bfloat16 widened to float32), without torch.

  Format: u64 little-endian header length, JSON header {name: {dtype, shape, data_offsets}},
  then the raw little-endian tensor bytes.
  """
  with open(path, "rb") as f:
    data = f.read()
  if len(data) < 8:
    raise ValueError(f"{path}: not a safetensors file (too short)")
  (n,) = struct.unpack("<Q", data[:8])
  if n > len(data) - 8:
    raise ValueError(f"{path}: not a safetensors file (header length {n} past the end)")
  try:
    header = json.loads(data[8:8 + n])
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: not a safetensors file ({e})") from None
  body = memoryview(data)[8 + n:]
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _SAFETENSORS_DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
    begin, end = info["data_offsets"]
    a = np.frombuffer(body[begin:end], dtype=np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
                      .newbyteorder("<")).reshape(info["shape"])
    if info["dtype"] == "BF16":
      a = (a.astype(np.uint32) << 16).view(np.float32)
    out[name] = np.array(a)
  return out


def load_state_dict(path, wrappers=WRAPPERS, strict: bool = False,
                    what: str = "reading PyTorch .bin/.pt checkpoints") -> dict[str, np.ndarray]:
  """A `.safetensors` or `torch.save` (.pt/.pth/.pth.tar/.bin) state dict as numpy arrays.

  Floating-point tensors of a torch file come back as float32. Each of `wrappers` present is
  unwrapped, in order. Values that are not tensors are skipped, or with `strict`
  refused (ValueError naming the key). A file torch cannot read, or that holds no dict, is one
  UserError line; `what` names the job in the error when torch is missing.
  """
  path = os.fspath(path)
  if path.endswith(".safetensors"):
    try:
      from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    except ImportError:
      return read_safetensors(path)
    return {k: np.asarray(v) for k, v in load_file(path).items()}
  torch = import_torch(what)
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pickle/zip errors have many types; all mean "not a state dict file"
    # the first sentence: torch's own advice after it (weights_only=False) is not for a file
    # from outside
    first = (str(e).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")
    raise UserError(f"cannot read {path} as a PyTorch state dict ({type(e).__name__}: {first})") from None
  for wrapper in wrappers:
    if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
      obj = obj[wrapper]
  if not isinstance(obj, dict) or not obj:
    raise UserError(f"{path} does not hold a state dict (got {type(obj).__name__})")
  out = {}
  for k, v in obj.items():
    if not torch.is_tensor(v):
      if strict:
        raise ValueError(f"{path}: key {k!r} is a {type(v).__name__}, not a tensor")
      continue
    v = v.detach().cpu()
    out[k] = (v.to(torch.float32) if v.is_floating_point() else v).numpy()
  return out


def conv_kernel(w_OIHW: np.ndarray) -> np.ndarray:
  """PyTorch Conv2d weight [out, in, kh, kw] → flax kernel [kh, kw, in, out]."""
  return np.ascontiguousarray(np.transpose(w_OIHW, (2, 3, 1, 0)))


def linear_kernel(w_OI: np.ndarray) -> np.ndarray:
  """PyTorch Linear weight [out, in] (or a 1×1 Conv1d's [out, in, 1]) → flax kernel [in, out]."""
  return np.ascontiguousarray(np.transpose(w_OI.reshape(w_OI.shape[0], -1)))
