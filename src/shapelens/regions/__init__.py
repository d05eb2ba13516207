"""Exact linear regions of piecewise-linear networks on 2-D slices of input space
(SplineCam: Humayun et al., CVPR 2023): :func:`partition` returns a :class:`Partition` of the
slice spanned by a :class:`Plane` into convex polygons, each with its activation pattern, the
network's affine map there, and the decision boundary; :func:`region_statistics`,
:func:`crossings` (Hanin & Rolnick 2019) and :func:`local_complexity` (Humayun et al. 2024)
measure them, :func:`plot_partition` draws them."""

from .partition import NotPiecewiseLinearError, Partition, PartitionTooLarge, Plane, estimate_regions, partition
from .plots import class_pieces, plot_partition, region_colors
from .stats import LocalComplexity, RegionStats, SegmentRegions, crossings, local_complexity, region_statistics

__all__ = ["Plane", "partition", "Partition", "PartitionTooLarge", "NotPiecewiseLinearError", "estimate_regions",
           "plot_partition", "region_colors", "class_pieces",
           "region_statistics", "RegionStats", "crossings", "SegmentRegions", "local_complexity", "LocalComplexity"]
