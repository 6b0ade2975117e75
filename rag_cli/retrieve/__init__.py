"""Search: filters, vector and keyword retrieval, fusion, the optional reranker, MMR, and the hits it returns."""
