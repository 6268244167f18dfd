"""emonet-batch: score face-image corpora with LAION's Empathic Insight Face emotion models."""

__version__ = "0.1.0"
