"""shapelens: measure the shape, symmetry and structure of neural networks.

The pipeline is one-way (see DESIGN.md): ``probe`` turns a model and data into point
clouds, estimators turn point clouds into small result objects, and the ``atlas`` assembles
results into a report.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
