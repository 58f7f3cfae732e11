"""Random projectors. Importing this package registers the built-in backends.

``rademacher`` and ``gaussian`` (torch, any device), ``cuda`` (fused Triton kernel),
``sjlt`` (sparse JL / CountSketch: torch, a C kernel or Triton), ``identity`` (no projection) and
``auto`` (``cuda`` when possible, else the torch backend). For one seed and distribution
every backend computes the same P.
"""

from dataflex.projectors.auto import AutoProjector
from dataflex.projectors.base import Projector
from dataflex.projectors.cuda import CudaProjector
from dataflex.projectors.gaussian import GaussianProjector
from dataflex.projectors.hashing import HASH_SCHEME
from dataflex.projectors.identity import IdentityProjector
from dataflex.projectors.rademacher import RademacherProjector
from dataflex.projectors.sjlt import SJLTProjector
from dataflex.projectors.tiled import DEFAULT_CACHE_BYTES, TiledProjector
from dataflex.registry import build_projector, list_projectors, register_projector

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "HASH_SCHEME",
    "AutoProjector",
    "CudaProjector",
    "GaussianProjector",
    "IdentityProjector",
    "Projector",
    "RademacherProjector",
    "SJLTProjector",
    "TiledProjector",
    "build_projector",
    "list_projectors",
    "register_projector",
]
