"""The catalog a command reads: one Source value (path, format, separator, columns, limit) and its readers."""
