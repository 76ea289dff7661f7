"""Random generators derived from a cell's seed and a purpose, so each use has its own stream.

A split, an epoch's data order and an epoch's augmentation each get a generator seeded from
(seed, ..., purpose): reproducible, independent of one another, and recomputable on resume.
"""
from __future__ import annotations

import hashlib

import torch


def derived_generator(*parts: object) -> torch.Generator:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
