"""Fine-tuning toolkit: training, evaluation, export to Triton, in-process inference.

Submodules import torch/transformers; this package root stays import-light so
``textpulse --help`` does not pay for them.
"""
