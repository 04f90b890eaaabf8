"""Network definitions for the zoo (torch; only needed to build)."""

from __future__ import annotations

import torch
import torch.nn as nn


def vgg(
    in_ch: int, widths, n_classes: int = 10, in_size: int = 32, bn: bool = False, hidden: int = 0, init: str = "kaiming"
) -> nn.Sequential:
    """VGG-style: per block Conv3x3(pad 1)[-BN]-ReLU-MaxPool2; then Flatten-[Linear-ReLU]-Linear.

    init="kaiming": conv weights kaiming_normal_(mode="fan_out", nonlinearity="relu"), conv
    biases 0 (as torchvision's VGG); Linear layers keep torch's default init.
    init="torch": torch's default init everywhere.
    """
    layers, c, s = [], in_ch, in_size
    for w in widths:
        layers.append(nn.Conv2d(c, w, 3, padding=1))
        if bn:
            layers.append(nn.BatchNorm2d(w))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
        c, s = w, s // 2
    layers.append(nn.Flatten())
    if hidden:
        layers += [nn.Linear(c * s * s, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)]
    else:
        layers.append(nn.Linear(c * s * s, n_classes))
    net = nn.Sequential(*layers)
    if init == "kaiming":
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
    return net


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = x if self.short is None else self.short(x)
        return self.relu(out + sc)


class SmallResNet(nn.Module):
    """Stem conv(3x3, stride 2)-BN-ReLU, then one BasicBlock per stage, GAP, Linear."""

    def __init__(self, in_ch: int = 3, widths=(16, 32, 64, 128), n_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, widths[0], 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(c, w, 1 if i == 0 else 2))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def conv_layers(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def random_shift_flip(pad: int = 4, flip: bool = True):
    """Augmentation: random translation by up to ``pad`` px (reflect padding) and h-flip."""

    def aug(xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, _, h, w = xb.shape
        xp = torch.nn.functional.pad(xb, (pad, pad, pad, pad), mode="reflect")
        ox = torch.randint(0, 2 * pad + 1, (n,), generator=g)
        oy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
        out = torch.stack([xp[i, :, oy[i] : oy[i] + h, ox[i] : ox[i] + w] for i in range(n)])
        if flip:
            f = torch.rand(n, generator=g) < 0.5
            out[f] = out[f].flip(-1)
        return out

    return aug


def depthnet(
    in_ch: int, stems: int = 1, width: int = 32, depth: int = 6, n_classes: int = 10, bn: bool = False
) -> nn.Sequential:
    """Constant-map-size network (pre-registration, claim 3).

    ``stems`` Conv3x3(stride 2, pad 1, ``width``)-ReLU layers halve the input (digits 32 -> 16: one;
    shapes 64 -> 32 -> 16: two), then ``depth`` Conv3x3(pad 1, ``width``)-ReLU layers keep the map
    size, then global average pooling and one Linear. Conv init as the VGGs (kaiming, fan_out). ``bn``: a
    BatchNorm after every conv (Conv-BN-ReLU).
    """
    layers, c = [], in_ch
    for i in range(stems + depth):
        layers.append(nn.Conv2d(c, width, 3, stride=2 if i < stems else 1, padding=1))
        if bn:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU())
        c = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, n_classes)]
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return net
