"""`enrich eval`: a model and its baseline on held-out rows, scored against the real descriptions."""
