"""Embedders and vector stores."""
