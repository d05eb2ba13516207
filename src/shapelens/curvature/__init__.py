"""Curvature: Hessian / GGN / empirical Fisher operators of the loss and their spectra
(Lanczos, Hutch++, stochastic Lanczos quadrature), sharpness, loss landscapes, curvature
during training, and the geometry a network induces on its input space.

Every algorithm is a free function over an operator with ``@``/``matvec``/``shape`` (the
curvlinops design); operators run data parallel under ``torch.distributed``.
"""

from .operators import GGN, CurvatureOperator, EmpiricalFisher, Hessian
from .sharpness import Sharpness, adaptive_sharpness, epsilon_sharpness, max_eigenvalue_sharpness, trace_sharpness
from .input_geometry import InputCurvature, InputMetric, input_curvature, input_metric
from .landscape import (Landscape, TrajectoryPCA, checkpoint_landscape, eigen_directions, landscape_1d,
                        landscape_2d, random_directions, trajectory_pca)
from .trajectory import CurvatureTracker, CurvatureTrajectory, lightning_callback
from .summary import CurvatureSummary, curvature_summary
from .spectra import Eigen, SpectralDensity, TraceEstimate, diagonal, eigenvalues, spectral_density, trace

__all__ = ["Hessian", "GGN", "EmpiricalFisher", "CurvatureOperator", "eigenvalues", "Eigen", "trace", "TraceEstimate",
           "spectral_density", "SpectralDensity", "diagonal",
           "epsilon_sharpness", "adaptive_sharpness", "max_eigenvalue_sharpness", "trace_sharpness", "Sharpness",
           "curvature_summary", "CurvatureSummary",
           "input_metric", "InputMetric", "input_curvature", "InputCurvature",
           "Landscape", "TrajectoryPCA", "random_directions", "eigen_directions", "landscape_1d",
           "landscape_2d", "checkpoint_landscape", "trajectory_pca",
           "CurvatureTracker", "CurvatureTrajectory", "lightning_callback"]
