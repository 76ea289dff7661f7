"""The metrics a cell's result records that the regression gate can compare (a module of its own
so the command line offers them without importing the gate, which needs pandas)."""
from __future__ import annotations

GATE_METRIC = "check_metric"  # which result column the gate compares ("metric" is a cell field)

METRICS = ("test_acc", "val_acc", "train_acc")
