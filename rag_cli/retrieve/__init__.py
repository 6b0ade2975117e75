"""Search: filters, vector retrieval and the hits it returns."""
