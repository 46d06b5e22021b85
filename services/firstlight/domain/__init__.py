"""Shared pure domain code (no service, no transport imports)."""
