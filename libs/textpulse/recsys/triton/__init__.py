"""Template of the Triton python-backend embedding model (copied into every exported version)."""
