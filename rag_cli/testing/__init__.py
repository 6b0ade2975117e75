"""Fakes for fast unit tests; the real parts are tested too."""
