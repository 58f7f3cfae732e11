"""dataflex: select training data while a language model is being fine-tuned."""

from dataflex.errors import ConfigError, DataflexError, RegistryError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataflexError", "RegistryError", "__version__"]
