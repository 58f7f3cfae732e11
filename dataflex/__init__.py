"""dataflex: select training data while a language model is being fine-tuned."""

from dataflex.errors import ConfigError, DataflexError, RegistryError
from dataflex.logging_utils import configure_library_logger

configure_library_logger()  # the `dataflex` logger prints INFO lines to stderr (see logging_utils)

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataflexError", "RegistryError", "__version__"]
