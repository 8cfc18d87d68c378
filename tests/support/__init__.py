"""Test support: fakes, the tiny model repository and synthetic-data generators (issue #24).

Kept out of the installable package (the wheel and the images carry only the product). The
benchmarks use the generators too, so this package imports nothing else from ``tests/`` and no
test framework (checked by ``tests/unit/test_package_boundaries.py``).
"""
