"""Structure: architectures as typed diagrams (category theory) and fiber-bundle networks.

* :mod:`~shapelens.structure.objects`: objects of the category, :class:`Space` (a per-example
  tensor shape, optionally carrying a group representation) and :class:`Product`;
* :mod:`~shapelens.structure.morphisms`: :class:`Morphism` (an ``nn.Module`` with a domain and a
  codomain), composition ``f >> g`` and the monoidal product ``f @ g``, type-checked when they are
  built; identities, projections, copies, concatenation, group actions;
* :mod:`~shapelens.structure.diagram`: :class:`Diagram`, declared equations between paths and
  equivariance squares, their commutativity errors on data (:meth:`Diagram.check`), a
  differentiable penalty (:meth:`Diagram.loss`) and a drawing (:meth:`Diagram.draw`);
* :mod:`~shapelens.structure.bundle`: :class:`BundleNetwork` (Courts & Kvinge, ICLR 2022).

References: Fong & Spivak, *An Invitation to Applied Category Theory* (2019); Gavranović et al.,
"Categorical Deep Learning is an Algebraic Theory of All Architectures" (ICML 2024).
"""

from .bundle import BundleHistory, BundleNetwork, knn_kl_divergence, mmd, wasserstein1
from .diagram import Diagram, DiagramCheck, Equation, EquationCheck, Path
from .draw import draw_diagram
from .morphisms import Compose, Morphism, Parallel, action, concat, diagonal, identity, pair, projection, split
from .objects import CycleError, Product, Space, StructureError, TypeMismatchError

__all__ = [
    "CycleError", "Product", "Space", "StructureError", "TypeMismatchError",
    "Compose", "Morphism", "Parallel", "action", "concat", "diagonal", "identity", "pair", "projection", "split",
    "Diagram", "DiagramCheck", "Equation", "EquationCheck", "Path", "draw_diagram",
    "BundleHistory", "BundleNetwork", "knn_kl_divergence", "mmd", "wasserstein1",
]
