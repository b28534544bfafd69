"""enrich: batch catalog enrichment with fine-tuned Llama models."""

__version__ = "0.1.0"
