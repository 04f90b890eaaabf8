"""Procedurally generated 64x64 RGB "shapes" dataset (10 classes), from a seed.

Each image: a noisy background (random base colour + random linear gradient +
Gaussian pixel noise) with one foreground pattern of a random colour (at least
100 apart from the background colour in RGB Euclidean distance) at a random
position and scale.  Pure numpy, no downloads, bit-reproducible from the seed.

Classes (index_name):
  0_circle 1_square 2_triangle 3_cross 4_ring 5_hstripes 6_vstripes 7_checker
  8_plus 9_diagonal
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = [
    "0_circle",
    "1_square",
    "2_triangle",
    "3_cross",
    "4_ring",
    "5_hstripes",
    "6_vstripes",
    "7_checker",
    "8_plus",
    "9_diagonal",
]
SIZE = 64
N_TRAIN = 6000
N_TEST = 1000
SEED = 1234

_yy, _xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5


def _mask(cls: int, rng: np.random.Generator) -> np.ndarray:
    r = rng.uniform(7.0, 20.0)  # half extent in pixels
    cx = rng.uniform(r + 1.0, SIZE - r - 1.0)
    cy = rng.uniform(r + 1.0, SIZE - r - 1.0)
    dx, dy = _xx - cx, _yy - cy
    box = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    w = 0.16 * r + 1.0  # bar half width
    if cls == 0:  # circle (filled disc)
        return dx * dx + dy * dy <= r * r
    if cls == 1:  # square, small rotation
        t = np.deg2rad(rng.uniform(-20, 20))
        u = np.cos(t) * dx + np.sin(t) * dy
        v = -np.sin(t) * dx + np.cos(t) * dy
        s = 0.78 * r
        return (np.abs(u) <= s) & (np.abs(v) <= s)
    if cls == 2:  # equilateral triangle, any rotation
        t = rng.uniform(0, 2 * np.pi)
        m = np.ones_like(dx, dtype=bool)
        # inside if on inner side of 3 edges: distance to centre along edge normals <= r/2
        for k in range(3):
            a = t + np.pi + 2 * np.pi * k / 3  # edge normal directions
            m &= (np.cos(a) * dx + np.sin(a) * dy) <= 0.5 * r
        return m
    if cls == 3:  # X cross
        s = 0.8 * r
        sq = (np.abs(dx) <= s) & (np.abs(dy) <= s)
        return sq & ((np.abs(dx - dy) / np.sqrt(2) <= w) | (np.abs(dx + dy) / np.sqrt(2) <= w))
    if cls == 4:  # ring
        d2 = dx * dx + dy * dy
        ri = rng.uniform(0.45, 0.65) * r
        return (d2 <= r * r) & (d2 >= ri * ri)
    if cls in (5, 6, 7, 9):  # periodic textures in a square patch
        p = rng.uniform(2.5, 5.0)  # half period
        off = rng.uniform(0, 2 * p)
        if cls == 5:
            ph = np.floor((dy + off) / p)
        elif cls == 6:
            ph = np.floor((dx + off) / p)
        elif cls == 7:
            ph = np.floor((dx + off) / p) + np.floor((dy + off) / p)
        else:
            sgn = 1.0 if rng.uniform() < 0.5 else -1.0
            ph = np.floor((dx + sgn * dy + off) / (p * np.sqrt(2)))
        return box & (ph % 2 == 0)
    if cls == 8:  # plus
        return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    raise ValueError(cls)


def _image(cls: int, rng: np.random.Generator) -> np.ndarray:
    bg = rng.uniform(0, 255, size=3)
    while True:
        fg = rng.uniform(0, 255, size=3)
        if np.linalg.norm(fg - bg) > 100:
            break
    # background: base colour + linear gradient
    t = rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(0, 40)
    grad = amp * ((np.cos(t) * (_xx - 32) + np.sin(t) * (_yy - 32)) / 32.0)
    img = bg[None, None, :] + grad[..., None]
    m = _mask(cls, rng)
    img = np.where(m[..., None], fg[None, None, :], img)
    sigma = rng.uniform(4, 32)
    img = img + rng.normal(0, sigma, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def generate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images (uint8 [n,64,64,3]) and balanced labels, deterministic from seed."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 10).astype(np.int64)
    x = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(n):
        x[i] = _image(int(y[i]), rng)
    return x, y


def load_shapes(n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = SEED):
    """(x_train, y_train, x_test, y_test); train from seed, test from seed+1."""
    xtr, ytr = generate(n_train, seed)
    xte, yte = generate(n_test, seed + 1)
    return xtr, ytr, xte, yte
