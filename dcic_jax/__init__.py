"""dcic_jax: Dual-Constrained Diffusion Image Compression (Jiang, Katto, Sun, 2026) in JAX/Flax."""

__version__ = "0.1.0"
