"""Triton model repositories: ``model.py`` (copied into each version) and ``config`` (the config.pbtxt generator)."""
