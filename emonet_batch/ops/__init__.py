"""Cluster operations: Ray Jobs submission, nightly incremental runs, and `doctor`."""
