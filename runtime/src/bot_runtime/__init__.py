"""`bot_runtime` is `botfleet.runtime` under its old name, kept for one release.

`import bot_runtime.bot` (or any submodule) gives the very module `botfleet.runtime.bot`, so
classes compare equal and module state is shared; importing warns once.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from importlib.machinery import ModuleSpec
from types import ModuleType

warnings.warn(
    "bot_runtime is now botfleet.runtime; the old name goes away in the next release",
    DeprecationWarning,
    stacklevel=2,
)

_OLD, _NEW = "bot_runtime", "botfleet.runtime"


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The target ran when it was imported; only its own spec is put back (the import system
        set the alias's)."""
        module.__spec__ = self.spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> ModuleSpec | None:
        if not fullname.startswith(_OLD + ".") or fullname.endswith(".__main__"):
            return None
        new = _NEW + fullname[len(_OLD) :]
        if importlib.util.find_spec(new) is None:
            return None
        return ModuleSpec(fullname, _AliasLoader(new))


sys.meta_path.insert(0, _AliasFinder())
