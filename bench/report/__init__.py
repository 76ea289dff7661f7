"""Reports: the papers' figures beside ours, verdicts, claims, plots, and the regression gates."""
