"""Export: the only place that imports torch and transformers. Checkpoint loading (checkpoint, hub,
synthetic), the PyTorch reference (reference), the fused graph (graph, quantize), its parity check
(parity) and the export itself (exporter)."""

from .exporter import ExportConfig, ExportResult, export_model  # noqa: F401
