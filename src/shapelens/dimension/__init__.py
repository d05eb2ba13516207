"""Intrinsic dimension: global and local estimators, scale curves and layer profiles.

Estimators follow scikit-learn: ``__init__`` stores parameters, ``fit(X)`` returns self,
fitted values end in ``_`` (``dimension_``, ``dimension_std_``). Look them up by name with
:func:`get` / :func:`estimate`; :func:`register` plugs new ones in.
"""

from .compare import DimensionEstimates, compare_estimators
from .estimators import GRIDE, MLE, CorrelationDimension, LocalPCA, TwoNN
from .local import local_dimension
from .phd import PHD
from .registry import available, estimate, get, register
from .scale import ScaleCurve, scale_curve

register("twonn", TwoNN, aliases=("2nn", "two_nn"))
register("mle", MLE, aliases=("levina_bickel",))
register("gride", GRIDE)
register("lpca", LocalPCA, aliases=("localpca", "local_pca", "pca"))
register("corr", CorrelationDimension, aliases=("correlation", "correlationdimension", "gp"))
register("phd", PHD, aliases=("ph_dim", "persistent_homology_dimension"))


def __getattr__(name):
    # layer_profile needs the probe; import lazily so estimators work without it
    if name in ("layer_profile", "LayerProfile"):
        from . import profile

        return getattr(profile, name)
    raise AttributeError(f"module 'shapelens.dimension' has no attribute {name!r}")


__all__ = [
    "TwoNN", "MLE", "GRIDE", "LocalPCA", "CorrelationDimension", "PHD",
    "local_dimension", "scale_curve", "ScaleCurve", "layer_profile", "LayerProfile",
    "estimate", "get", "available", "register", "compare_estimators", "DimensionEstimates",
]
