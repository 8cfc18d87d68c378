"""Only what pyproject.toml cannot say: the colocated unit tests stay out of the wheel (issue #24).

setuptools packs every ``*.py`` of a package and ``exclude-package-data`` filters data files only,
so the build step that lists a package's modules drops ``test_*.py`` here. The source tree (and an
editable install, which maps the packages onto it) keeps them for pytest.
tests/unit/test_package_boundaries.py builds the wheel and checks its file list.
"""

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithoutTests(build_py):
    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        modules: list[tuple[str, str, str]] = super().find_package_modules(package, package_dir)
        return [(pkg, module, path) for pkg, module, path in modules if not module.startswith("test_")]


setup(cmdclass={"build_py": BuildPyWithoutTests})
