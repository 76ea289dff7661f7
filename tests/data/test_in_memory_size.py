"""In-memory sets keep their native size and are resized batch by batch (issue 24, point 3)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import torch
import torch.nn.functional as F

from bench.data.images import TensorImageSet


def test_per_batch_resize_equals_resizing_the_whole_set() -> None:
    """Bitwise what the load-time resize gave, so no cell's result changes under its id."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 8, 8), generator=g, dtype=torch.uint8)
    whole = F.interpolate(images.float(), size=(28, 28), mode="bilinear", align_corners=False).round().clamp(0, 255).to(torch.uint8)
    data = TensorImageSet(images, torch.arange(20), 20, "x").resized(28)
    assert data.size == 28 and data.images.shape[-1] == 8
    idx = torch.randperm(20, generator=g)
    got = torch.cat([batch for batch, _, _ in data.batches(idx, 6)])
    assert torch.equal(got, whole[idx])
    assert data.resized(8).size == 8 and data.resized(8).out_size is None


PEAK = textwrap.dedent("""
    import resource, sys, torch
    from bench.data.images import TensorImageSet
    size = int(sys.argv[1])
    images = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8)  # CIFAR-100's train split
    data = TensorImageSet(images, torch.arange(50_000) % 100, 100, "cifar100").resized(size)
    order = torch.randperm(50_000)[:640]
    for batch, _, _ in data.batches(order, 64):
        assert batch.shape == (len(batch), 3, size, size)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)  # MiB
""")


def _peak_mib(size: int) -> int:
    out = subprocess.run([sys.executable, "-c", PEAK, str(size)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_cifar100_at_224_px_needs_no_more_host_memory_than_at_32() -> None:
    """Peak RSS of a process holding CIFAR-100-shaped data and taking batches at 224 px stays
    within one batch's work (64 images: 38 MiB float + 10 MiB uint8) of the same at 32 px;
    resizing the whole set would take 7.5 GB (uint8) and 30 GB on the way (float)."""
    at_32, at_224 = _peak_mib(32), _peak_mib(224)
    assert at_224 <= at_32 + 128, (at_32, at_224)
