"""Data: image sets, the dataset registry, splits and batched augmentation."""
