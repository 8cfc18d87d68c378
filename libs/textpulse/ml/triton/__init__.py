"""Files copied into Triton model repositories (see ``EXPORT_FORMAT.md``)."""
