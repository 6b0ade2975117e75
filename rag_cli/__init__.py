"""rag-cli: question answering over your own documents, entirely on your machine."""

__version__ = "0.1.0"
