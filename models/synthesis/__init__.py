"""Rendered multi-view faces with ground truth, from any morphable model (training data, examples, benchmarks)."""
