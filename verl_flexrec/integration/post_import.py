"""Run a callback right after a module is first imported (a one-shot post-import hook).

The ``flexrec_sync`` trainer subclasses verl's V1 trainer, whose module imports Ray,
TransferQueue and the training engines. Importing it from our ``verl.plugins`` entry point would
make every ``import verl`` pay for that (and import verl's trainer while ``verl/__init__`` is
still running). Instead the entry point asks to be called back when verl itself imports
``verl.trainer.ppo.v1`` — which ``TaskRunnerV1.run`` does right before ``get_trainer_cls`` — and
registers the trainer then. If the module is already loaded, the callback runs at once.

The finder only wraps the loader verl's module would have had anyway; after the module body ran it
puts the original loader back. A failing callback is logged at ERROR and never breaks the import
of verl's module (``python -m verl_flexrec doctor`` then reports the missing registration).
"""

from __future__ import annotations

import importlib.abc
import logging
import sys
from collections.abc import Callable

__all__ = ["when_imported"]

logger = logging.getLogger(__name__)

_MARK = "_verl_flexrec_post_import"


def _run(callbacks: list[Callable], module) -> None:
    for callback in callbacks:
        try:
            callback(module)
        except Exception:
            logger.exception("verl-flexrec: post-import hook for %s failed", module.__name__)


class _Loader(importlib.abc.Loader):
    def __init__(self, loader, callbacks: list[Callable]):
        self._loader = loader
        self._callbacks = callbacks

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        _run(self._callbacks, module)

    def __getattr__(self, name):  # resource readers, get_code, ... of the real loader
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self):
        setattr(self, _MARK, True)
        self.hooks: dict[str, list[Callable]] = {}

    def find_spec(self, fullname, path=None, target=None):
        callbacks = self.hooks.pop(fullname, None)
        if callbacks is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            self.hooks[fullname] = callbacks  # not importable (yet): keep waiting
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            self.hooks[fullname] = callbacks
            return spec
        spec.loader = _Loader(spec.loader, callbacks)
        return spec


def _finder() -> _Finder:
    for finder in sys.meta_path:
        if getattr(finder, _MARK, False):
            return finder  # type: ignore[return-value]
    finder = _Finder()
    sys.meta_path.insert(0, finder)
    return finder


def when_imported(module_name: str, callback: Callable, *, loaded_marker: str | None = None) -> None:
    """Call ``callback(module)`` once ``module_name`` has been imported (now, if it already is).

    ``loaded_marker``: an attribute the module defines at the end of its body; a module in
    ``sys.modules`` without it is still being imported, so the callback waits for it to finish.
    """
    module = sys.modules.get(module_name)
    if module is not None and (loaded_marker is None or hasattr(module, loaded_marker)):
        _run([callback], module)
        return
    if module is not None:
        # mid-import (called from inside its body): too late to wrap its loader
        logger.error("verl-flexrec: %s is being imported; cannot hook it (run `python -m verl_flexrec doctor`)", module_name)
        return
    hooks = _finder().hooks.setdefault(module_name, [])
    if not any(getattr(c, "__qualname__", None) == getattr(callback, "__qualname__", object()) and
               getattr(c, "__module__", None) == getattr(callback, "__module__", object()) for c in hooks):
        hooks.append(callback)
