"""One plug-in seam for every kind of interchangeable part: models, samplers, routers, layers, tasks.

A `Registry` maps short names to objects (classes, functions, factories). A config names a part
either by its short name (`diffusion.sampler = "dpmpp_2m"`) or by an import path
(`"my_package.my_module:MySampler"`), so a user's own part needs no change to netlab. An unknown
name is a one-line `UserError` that names the config key, the choices and the closest match.

Entries come from three places, looked up in this order:
1. `@REGISTRY.register("name")` on a definition in any module the registry scans: the registry
   imports every module of its `packages` on the first lookup, so a new part is one new file with
   a decorator (plus its test) and no table to edit;
2. `lazy={"name": "module:attr"}` entries given at construction, for parts that live outside the
   scanned packages (another pillar's MLP, a task) and must not be imported until used;
3. `module:attr` import paths written directly in the config.

Every registry is listed in `ALL` (a test walks them and builds each entry from a config).
"""  # noqa: E501

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Any, Callable

from netlab.errors import UserError

ALL: dict[str, "Registry"] = {}


def import_path(spec: str, key: str = "") -> Any:
    """The object named by 'package.module:attr' (attr may be dotted); UserError when missing."""
    module_name, _, attr = spec.partition(":")
    where = f"{key}={spec!r}: " if key else f"{spec!r}: "
    if not module_name or not attr:
        raise UserError(f"{where}expected a registered name or 'package.module:Name'")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UserError(f"{where}cannot import {module_name} ({e})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{where}{module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


class Registry:
    """Named parts of one kind, e.g. `Registry("sampler", "diffusion.sampler", ("netlab.diffusion",))`.

    kind: what an entry is, for messages. key: the config key that names an entry, for messages.
    packages: packages whose modules are imported (once) before the first lookup, so that their
    `@register` decorators run. lazy: {name: "module:attr"} entries imported on use. example: a
    config (`path:preset`) in which `key` names an entry; the test suite sets `key` to a bad value
    there and expects exit status 2 with one line.
    """  # noqa: E501

    def __init__(
        self, kind: str, key: str, packages=(), lazy: dict | None = None, example: str = ""
    ):
        if kind in ALL:
            raise ValueError(f"a registry of kind {kind!r} already exists")
        self.kind, self.key = kind, key
        self.example = example  # "configs/<f>.py:preset" whose `key` names an entry (for tests)
        self.packages = tuple(packages)
        self._lazy = dict(lazy or {})
        self._entries: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}
        self._scanned = False
        ALL[kind] = self

    def register(self, name: str, *aliases: str) -> Callable[[Any], Any]:
        """Decorator: `@SAMPLERS.register("ddim")`; returns the object unchanged."""

        def decorate(obj):
            old = self._entries.get(name)
            if old is not None and old is not obj and _qualname(old) != _qualname(obj):
                raise ValueError(
                    f"{self.kind} {name!r} registered twice: {_qualname(old)} and {_qualname(obj)}"
                )
            self._entries[name] = obj
            for a in aliases:
                self._aliases[a] = name
            return obj

        return decorate

    def add_lazy(self, name: str, spec: str) -> None:
        self._lazy[name] = spec

    def _scan(self):
        if self._scanned:
            return
        self._scanned = True
        for package in self.packages:
            pkg = importlib.import_module(package)
            for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), prefix=package + "."):
                importlib.import_module(info.name)

    def names(self) -> list[str]:
        """Every registered short name, aliases excluded (scans the packages)."""
        self._scan()
        return sorted(set(self._entries) | set(self._lazy))

    def __contains__(self, name) -> bool:
        return name in self.names()

    def get(self, name: str, key: str | None = None) -> Any:
        """The entry called `name` (a short name or 'module:attr'); UserError naming the choices."""
        key = key or self.key
        if not isinstance(name, str) or not name:
            raise UserError(
                f"{key}={name!r}: name a {self.kind}; choose one of {', '.join(self.names())}"
            )
        if ":" in name:
            return import_path(name, key)
        self._scan()
        name = self._aliases.get(name, name)
        if name in self._entries:
            return self._entries[name]
        if name in self._lazy:
            return import_path(self._lazy[name], key)
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(
            f"{key}={name!r}: unknown {self.kind}; choose one of {', '.join(self.names())}"
            f" or 'package.module:Name'{hint}"
        )

    def build(self, name: str, *args, key: str | None = None, **kwargs) -> Any:
        """`get(name)(*args, **kwargs)`; a TypeError from bad keyword arguments becomes a UserError."""  # noqa: E501
        factory = self.get(name, key)
        try:
            return factory(*args, **kwargs)
        except TypeError as e:
            if "argument" not in str(e):
                raise
            raise UserError(f"{key or self.key}={name!r}: {e}") from None


def _qualname(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def check_choice(key: str, value, choices) -> Any:
    """A plain (non-registry) config choice: `value` if it is in `choices`, else a one-line UserError."""  # noqa: E501
    choices = tuple(choices)
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UserError(f"{key}={value!r}: choose one of {', '.join(map(str, choices))}{hint}")


def check_range(key: str, value, lo=None, hi=None, *, integer=False) -> Any:
    """`value` if lo <= value <= hi (and an int when `integer`), else a one-line UserError."""
    bad = (integer and (isinstance(value, bool) or not isinstance(value, int))) or value != value
    if not bad and lo is not None and value < lo:
        bad = True
    if not bad and hi is not None and value > hi:
        bad = True
    if bad:
        span = f">= {lo}" if hi is None else (f"<= {hi}" if lo is None else f"in [{lo}, {hi}]")
        raise UserError(
            f"{key}={value!r}: expected {'an integer' if integer else 'a number'} {span}"
        )
    return value
