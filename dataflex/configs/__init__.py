"""Configuration files shipped with dataflex and their schemas."""

from dataflex.configs.components import SHIPPED_COMPONENTS, Components, load_components

__all__ = ["SHIPPED_COMPONENTS", "Components", "load_components"]
