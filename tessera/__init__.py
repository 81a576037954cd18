"""Tessera: a self-hosted PKI."""

__version__ = "0.1.0"
