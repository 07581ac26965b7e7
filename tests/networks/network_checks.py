"""Checks shared by the network tests: derivatives against finite differences, a small real fit."""

import torch
from torch import nn


def check_gradients(net: nn.Module, in_dim: int = 2, seed: int = 0) -> None:
    """`net` (float64) passes gradcheck and gradgradcheck at random points, and every parameter
    gets a finite, non-zero gradient from a squared-output loss."""
    torch.manual_seed(seed)
    x = (torch.rand(6, in_dim, dtype=torch.float64) * 2 - 1).requires_grad_()
    assert torch.autograd.gradcheck(net, (x,), eps=1e-6, atol=1e-6, rtol=1e-4)
    assert torch.autograd.gradgradcheck(net, (x,), eps=1e-6, atol=1e-5, rtol=1e-3)
    net.zero_grad()
    net(x.detach()).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def camera_fit_psnr(network_cfg, lr: float, run_dir, steps: int = 300) -> float:
    """PSNR (dB) of `network_cfg` on raw coordinates fitted to camera at 32 x 32 (grey), full batch,
    `steps` steps at `lr`, seed 0, float32."""
    from nfield.data.images import load_image
    from nfield.encodings import IdentityConfig
    from nfield.fields import FieldConfig
    from nfield.tasks.image import ImageTask, ImageTaskConfig
    from nfield.training.trainer import TrainConfig, Trainer, seed_everything

    seed_everything(0)
    task = ImageTask(load_image("camera", 16), FieldConfig(IdentityConfig(), network_cfg), ImageTaskConfig(), seed=0)
    train = TrainConfig(steps=steps, lr=lr, eval_every=0, checkpoint_every=0, mixed_precision=False, progress=False)
    return Trainer(task, train, run_dir).fit()["psnr"]
