"""Root conftest: loaded for every path pytest collects (tests/, libs/, services/).

It only registers :mod:`tests.ci`, the one definition of "in CI" and the hook that
fails a CI session which skipped or deselected any test.
"""

pytest_plugins = ("tests.ci",)
