"""Nominal sizes of the registered datasets, for estimates made before any data is read.

``bench plan --cost`` runs on a login node that may hold no data at all, so it counts a matrix's
work from these figures (the official releases' sizes; our fixed split where a dataset has none),
not from the files. A dataset missing here is reported as of unknown size, never guessed.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NominalSize:
    """Images in the train and test splits, classes, stored side and channels, and whether the
    loader holds the split in host memory (else it streams files from disk)."""

    train: int
    test: int
    classes: int
    side: int
    channels: int = 3
    in_memory: bool = False


SIZES: dict[str, NominalSize] = {
    "digits": NominalSize(1347, 450, 10, 8, 1, True),
    "mnist": NominalSize(60_000, 10_000, 10, 28, 1, True),
    "fashion_mnist": NominalSize(60_000, 10_000, 10, 28, 1, True),
    "cifar10": NominalSize(50_000, 10_000, 10, 32, 3, True),
    "cifar100": NominalSize(50_000, 10_000, 100, 32, 3, True),
    "caltech256": NominalSize(24_486, 6_121, 257, 300),          # 30,607 images, our 80:20 split
    "flowers102": NominalSize(2_040, 6_149, 102, 500),
    "dtd": NominalSize(3_760, 1_880, 47, 500),
    "food101": NominalSize(75_750, 25_250, 101, 512),
    "oxford_pets": NominalSize(3_680, 3_669, 37, 500),
    "imagenet": NominalSize(1_281_167, 50_000, 1000, 400),
    "openimages": NominalSize(1_743_042, 0, 0, 600),              # v4 train images, an unlabeled pool
    "tf_flowers": NominalSize(3_303, 367, 5, 320),                # 3,670 images, 10% held out as test
    "cats_vs_dogs": NominalSize(20_936, 2_326, 2, 400),           # 23,262 decodable images, 10% held out
}
