"""enrich: batch catalog enrichment with fine-tuned Llama models.

Importing enrich changes nothing process-wide: the commands set what they need (enrich.run.memory, the
engines' environment, the libraries' log levels) where they run.
"""

__version__ = "0.1.0"
