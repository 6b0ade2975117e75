"""`rag eval`: question files, metrics, runs, comparisons and gates."""
