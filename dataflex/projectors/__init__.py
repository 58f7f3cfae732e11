"""Random projectors. Importing this package registers the built-in backends."""

from dataflex.projectors.base import Projector
from dataflex.registry import build_projector, list_projectors, register_projector

__all__ = ["Projector", "build_projector", "list_projectors", "register_projector"]
