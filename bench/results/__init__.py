"""The results folder (atomic store, locks, artifact checks) and what reads it: collect and MLflow."""
