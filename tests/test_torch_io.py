"""PyTorch layouts → flax (`dcic_jax.torch_io`), and the one missing-torch error every importer gives."""
import sys

import numpy as np
import pytest

from dcic_jax import torch_io
from dcic_jax.errors import UserError


def test_kernel_layouts():
  rng = np.random.default_rng(0)
  w_OIHW = rng.standard_normal((4, 3, 2, 5)).astype(np.float32)
  k = torch_io.conv_kernel(w_OIHW)
  assert k.shape == (2, 5, 3, 4) and k.flags.c_contiguous
  assert k[1, 4, 2, 3] == w_OIHW[3, 2, 1, 4]
  w_OI, x_I = rng.standard_normal((4, 3)), rng.standard_normal(3)
  np.testing.assert_allclose(x_I @ torch_io.linear_kernel(w_OI), w_OI @ x_I)         # y = W x
  np.testing.assert_array_equal(torch_io.linear_kernel(w_OI[:, :, None]), w_OI.T)  # Conv1d 1x1


def test_missing_torch_is_one_user_error_line_and_an_import_error(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
  with pytest.raises(UserError, match=r"^reading PyTorch .* needs torch: pip install torch==") as info:
    torch_io.load_state_dict(tmp_path / "w.pt")
  assert isinstance(info.value, ImportError) and "\n" not in str(info.value)


def test_an_unreadable_file_is_one_line_without_torchs_advice(monkeypatch, tmp_path):
  """torch's refusal goes on to advise weights_only=False, which is wrong for a file from outside:
  the error keeps only its first sentence."""
  import types

  def load(*_, **__):
    raise RuntimeError("Weights only load failed. Re-running `torch.load` with `weights_only` set to "
                       "`False` will likely succeed, but it can result in arbitrary code execution.\nmore")
  monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(load=load))
  with pytest.raises(UserError) as info:
    torch_io.load_state_dict(tmp_path / "photo.png")
  assert str(info.value) == (f"cannot read {tmp_path / 'photo.png'} as a PyTorch state dict "
                             "(RuntimeError: Weights only load failed)")
