"""Curvature of the loss: Hessian / GGN / empirical Fisher operators and their spectra.

Work in progress toward issue 3 (landscapes, sharpness, trajectories and input-space geometry
come next); what is here is tested against exact dense matrices.
"""

from .operators import GGN, CurvatureOperator, EmpiricalFisher, Hessian
from .sharpness import Sharpness, adaptive_sharpness, epsilon_sharpness, max_eigenvalue_sharpness, trace_sharpness
from .input_geometry import InputCurvature, InputMetric, input_curvature, input_metric
from .landscape import (Landscape, TrajectoryPCA, checkpoint_landscape, eigen_directions, landscape_1d,
                        landscape_2d, random_directions, trajectory_pca)
from .summary import CurvatureSummary, curvature_summary
from .spectra import Eigen, SpectralDensity, TraceEstimate, diagonal, eigenvalues, spectral_density, trace

__all__ = ["Hessian", "GGN", "EmpiricalFisher", "CurvatureOperator", "eigenvalues", "Eigen", "trace", "TraceEstimate",
           "spectral_density", "SpectralDensity", "diagonal",
           "epsilon_sharpness", "adaptive_sharpness", "max_eigenvalue_sharpness", "trace_sharpness", "Sharpness",
           "curvature_summary", "CurvatureSummary",
           "input_metric", "InputMetric", "input_curvature", "InputCurvature",
           "Landscape", "TrajectoryPCA", "random_directions", "eigen_directions", "landscape_1d",
           "landscape_2d", "checkpoint_landscape", "trajectory_pca"]
