"""``python -m benchmarks NAME [flags]``: ``rospr-bench NAME`` from a checkout that is only on
``PYTHONPATH`` (not installed), as on a GPU machine without a package registry:

    PYTHONPATH=. python -m benchmarks gpu --no-install

The checkout's folders are importable under their installed names (``rospr_bench``, ``rospr_harness``,
``rospr_export``: pyproject.toml's ``[tool.setuptools.package-dir]``, read here so that table stays the
one definition); the checkout's own folders win over an installed copy.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_dirs(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, Path]:
    """Installed package name -> its folder in the checkout, from pyproject.toml's package-dir table."""
    import tomllib  # Python >= 3.11; on 3.10, install the checkout instead (pip install -e .)

    table = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in table.items()}


class CheckoutFolders:
    """A meta path finder giving each name of ``folders`` its folder (a package, or a namespace
    package where the folder has no ``__init__.py``)."""

    def __init__(self, folders: dict[str, Path]) -> None:
        self.folders = folders

    def find_spec(self, name: str, path=None, target=None):
        folder = self.folders.get(name)
        if folder is None:
            return None
        init = folder / "__init__.py"
        if init.is_file():
            return importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        return spec


def main() -> int:
    sys.path.insert(0, str(ROOT))  # rospr itself keeps its folder's name
    sys.meta_path.insert(0, CheckoutFolders(package_dirs()))
    from rospr_bench.entry import main as bench

    return bench()


if __name__ == "__main__":
    sys.exit(main())
