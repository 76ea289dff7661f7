"""Forwards without gradient run at the device's inference batch, not the training batch."""
from __future__ import annotations

import pytest
import torch

from bench.cli import main
from bench.training.inference import forward_in_batches
from bench.models.zoo import create_model
from bench.training.runtime import CPU_INFER_BATCH, Runtime


def test_the_inference_batch_is_the_devices_unless_set() -> None:
    assert Runtime(device="cpu").inference_batch(128) == CPU_INFER_BATCH
    assert Runtime(device="cpu", infer_batch_size=500).inference_batch(128) == 500
    assert Runtime(device="cpu").describe()["infer_batch_size"] == 0


def test_forwards_in_inference_batches_give_the_whole_batchs_outputs() -> None:
    torch.manual_seed(0)
    model = create_model("menghani_cnn", num_classes=10, in_chans=1, image_size=28, pretrained=False).eval()
    x = torch.rand(100, 1, 28, 28)  # 100 = 3 x 32 + 4: a short last part too
    with torch.no_grad():
        whole = model(x)
    calls: list[int] = []
    model.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    chunked = forward_in_batches(model, x, Runtime(device="cpu"))
    assert calls == [32, 32, 32, 4] and not chunked.requires_grad
    assert torch.allclose(chunked, whole, rtol=0, atol=1e-6)  # bitwise on the machines we tried


def test_a_non_positive_inference_batch_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "matrices/ci.yaml", "--infer-batch-size", "0", "--results", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err
    assert "--infer-batch-size 0: must be a positive number of images" in err and "Traceback" not in err
