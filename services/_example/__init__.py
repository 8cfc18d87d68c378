"""A minimal service to copy when adding one (not deployed: see README.md)."""
