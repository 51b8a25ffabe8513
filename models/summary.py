"""Model size figures as YOLOv5 prints them: layers, parameters, gradients, GFLOPs."""
from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> tuple[int, int]:
    """(number of parameters, number of parameters that require a gradient)."""
    n_p = sum(p.numel() for p in model.parameters())
    n_g = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return n_p, n_g


@torch.no_grad()
def count_macs(model: nn.Module, image: torch.Tensor) -> int:
    """Multiply-accumulates for one eval-mode forward of ``image`` (B, C, H, W), thop's rules.

    Conv2d: output_elements * ((C_in / groups) * kh * kw + 1 if bias); BatchNorm2d:
    2 * output_elements (scale and shift). Activations, pooling, upsampling count zero.
    """
    total = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        k = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        total += out.numel() * (k + (m.bias is not None))

    def bn_hook(_m: nn.BatchNorm2d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += 2 * out.numel()

    handles = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles += [m.register_forward_hook(bn_hook) for m in model.modules()
                if isinstance(m, nn.BatchNorm2d)]
    was_training = model.training
    try:
        model.eval()
        model(image)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


def gflops(model: nn.Module, img_size: int | tuple[int, int] = 640, ch: int = 3,
           stride: int = 32) -> float:
    """GFLOPs of one image at ``img_size``, with GFLOPs = 2 * MACs as thop/YOLOv5 print it.

    Measured on a small ``stride`` x ``stride`` image and scaled by area (as YOLOv5 does),
    which is exact when the image size is a multiple of the largest stride. Unfused yolov5s
    gives 16.5 (YOLOv5 README: 16.5; YOLOv5's training summary with a newer thop, which counts
    BatchNorm at 4 ops per element, prints 16.6).
    """
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    p = next(model.parameters())
    image = torch.zeros(1, ch, stride, stride, device=p.device, dtype=p.dtype)
    macs = count_macs(model, image)
    return 2 * macs / 1e9 * (h / stride) * (w / stride)
