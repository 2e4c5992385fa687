"""The diffusion prior: ε-UNet (`unet`), VP schedules (`schedules`), DDPM/DDIM samplers
(`samplers`), training (`losses`, `train`) and PyTorch checkpoint import (`convert`).

Ho et al. 2020 (DDPM); Song et al. 2021 (DDIM); Nichol & Dhariwal 2021 (Improved DDPM);
Dhariwal & Nichol 2021 (ADM). Submodules are imported explicitly, so importing this package is
cheap.
"""
