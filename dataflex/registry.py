"""A small generic registry: register entries by decorator, look them up by name.

One :class:`Registry` instance exists per kind of component (selectors, projectors,
chat templates). Lookups of unknown names raise with the closest registered names,
the way timm's ``create_model`` does.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from dataflex.errors import RegistryError, did_you_mean

if TYPE_CHECKING:
    from dataflex.data.templates import Template
    from dataflex.projectors.base import Projector
    from dataflex.selectors.base import Selector

T = TypeVar("T")
S = TypeVar("S", bound="Selector")
P = TypeVar("P", bound="Projector")


class Registry(Generic[T]):
    """Maps names to entries of one kind: classes (selectors, projectors) or values (templates).

    Args:
        kind: What the registry holds, used in messages (e.g. ``"selector"``).
        base: Class every entry must subclass (an entry that is a class) or be an instance
            of (any other entry), or its dotted path ``"package.module:Class"`` (resolved on
            first use, avoiding import cycles).
        builtins: Module whose import registers the built-in entries; imported on
            the first lookup, so ``list_selectors()`` shows them without the caller
            importing ``dataflex.selectors`` first.
    """

    def __init__(self, kind: str, base: type | str | None = None, builtins: str | None = None) -> None:
        self.kind = kind
        self._base = base
        self._builtins = builtins
        self._entries: dict[str, T] = {}

    @property
    def base(self) -> type | None:
        if isinstance(self._base, str):
            module, _, attr = self._base.partition(":")
            resolved: type = getattr(importlib.import_module(module), attr)
            self._base = resolved
        return self._base

    def _load_builtins(self) -> None:
        if self._builtins is not None:
            module, self._builtins = self._builtins, None
            importlib.import_module(module)

    def _check_name(self, name: object) -> None:
        if not isinstance(name, str) or not name:
            raise RegistryError(f"A {self.kind} name must be a non-empty string, got {name!r}.")

    def add(self, name: str, entry: T, *, overwrite: bool = False) -> T:
        """Register ``entry`` under ``name``; a class also gets ``registry_name = name``.

        Registering the same entry (or an equal value) twice is a no-op.

        Raises:
            RegistryError: if ``name`` is not a non-empty string, is taken by another entry
                (unless ``overwrite``), or the entry has the wrong base.
        """
        self._check_name(name)
        other = self._entries.get(name)
        if other is not None and other is not entry and other != entry and not overwrite:
            owner = other if inspect.isclass(other) else type(other)
            raise RegistryError(
                f"{self.kind} {name!r} is already registered by "
                f"{owner.__module__}.{owner.__qualname__}; choose another name."
            )
        base = self.base
        if base is not None:
            ok = issubclass(entry, base) if inspect.isclass(entry) else isinstance(entry, base)
            if not ok:
                how = "subclass" if inspect.isclass(entry) else "be an instance of"
                raise RegistryError(
                    f"Cannot register {entry!r} as {self.kind} {name!r}: it must {how} "
                    f"{base.__module__}.{base.__qualname__}."
                )
        self._entries[name] = entry
        if inspect.isclass(entry):
            # Selector and Projector declare registry_name; a Registry[T] of another base need not.
            entry.registry_name = name  # type: ignore[attr-defined]
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering a class (or function) under ``name``; see :meth:`add`.

        Raises:
            RegistryError: if ``name`` is not a non-empty string (at once), or, when the
                decorator is applied, as :meth:`add` does.
        """
        self._check_name(name)

        def decorator(entry: T) -> T:
            return self.add(name, entry)

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and interactive sessions)."""
        self.get(name)
        del self._entries[name]

    def get(self, name: str) -> T:
        """Return the entry registered as ``name``.

        Raises:
            RegistryError: naming the closest registered names.
        """
        self._load_builtins()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise RegistryError(
                f"Unknown {self.kind} {name!r}." + did_you_mean(str(name), self.names())
            ) from None

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._entries

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted registered names, optionally filtered by a glob such as ``"l*"``."""
        self._load_builtins()
        names = sorted(self._entries)
        if pattern is not None:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return names

    def summary(self, name: str) -> str:
        """The entry's ``description`` if it has one, else the first line of its docstring."""
        entry = self.get(name)
        doc = getattr(entry, "description", None) if not inspect.isclass(entry) else None
        doc = doc or inspect.getdoc(entry) or ""
        return doc.splitlines()[0] if doc else ""


SELECTORS: Registry[type[Selector]] = Registry(
    "selector", base="dataflex.selectors.base:Selector", builtins="dataflex.selectors"
)
PROJECTORS: Registry[type[Projector]] = Registry(
    "projector", base="dataflex.projectors.base:Projector", builtins="dataflex.projectors"
)
TEMPLATES: Registry[Template] = Registry(
    "template", base="dataflex.data.templates:Template", builtins="dataflex.data.templates"
)
"""Named chat templates (``template:`` in configs); ``tokenizer`` is not one of them but the
tokenizer's own chat template (see :func:`dataflex.data.templates.get_template`)."""


def register_selector(name: str) -> Callable[[type[S]], type[S]]:
    """Register a :class:`~dataflex.selectors.base.Selector` subclass under ``name``."""
    # The decorator returns the class it is given, so the subclass keeps its own type.
    return cast("Callable[[type[S]], type[S]]", SELECTORS.register(name))


def register_projector(name: str) -> Callable[[type[P]], type[P]]:
    """Register a :class:`~dataflex.projectors.base.Projector` subclass under ``name``."""
    return cast("Callable[[type[P]], type[P]]", PROJECTORS.register(name))


def get_selector(name: str) -> type[Selector]:
    """The selector class registered as ``name``."""
    return SELECTORS.get(name)


def get_projector(name: str) -> type[Projector]:
    """The projector class registered as ``name``."""
    return PROJECTORS.get(name)


def list_selectors(pattern: str | None = None) -> list[str]:
    """Registered selector names, optionally filtered by a glob."""
    return SELECTORS.names(pattern)


def list_projectors(pattern: str | None = None) -> list[str]:
    """Registered projector names, optionally filtered by a glob."""
    return PROJECTORS.names(pattern)


def build_selector(name: str, **params: object) -> Selector:
    """Validate ``params`` with the selector's ``Params`` model and build it."""
    cls = SELECTORS.get(name)
    return cls.from_params(params)


def build_projector(name: str, **kwargs: object) -> Projector:
    """Build the projector registered as ``name`` (kwargs go to its constructor)."""
    cls: Callable[..., Projector] = PROJECTORS.get(name)  # its constructor checks the kwargs
    return cls(**kwargs)
