"""Symmetry (issue 5): groups given by generators (finite permutation groups C_n, D_n, S_n and
direct products; matrix Lie groups SO(2), O(2), SO(3), O(3) and any group given by Lie-algebra
and discrete generators), their representations (:class:`Rep`), bases of equivariant linear
maps (:func:`equivariant_basis`), the layers built on them (:class:`EquivariantLinear`,
equivariant nonlinearities, invariant pooling, :class:`GroupConv2d` for p4/p4m), and measures of how equivariant a
model is (:func:`equivariance_error`, :func:`lie_derivative` through differentiable image
warps, :func:`symmetry_survey`), and the symmetries of weight space (:func:`permute_hidden`,
:func:`align` by Git Re-Basin weight or activation matching, :func:`interpolation_barrier`,
:func:`canonical_form` for ReLU rescaling)."""

from .groups import (
    MAX_ORDER,
    O2,
    O3,
    SO2,
    SO3,
    FiniteGroup,
    Group,
    MatrixGroup,
    cyclic,
    dihedral,
    direct_product,
    symmetric,
)
from .gconv import GroupConv2d, GroupPool, act_on_features, act_on_image, element_name, multiplication_table
from .layers import EquivariantLinear
from .measure import EquivarianceError, LayerEquivarianceError, LieDerivative, equivariance_error, lie_derivative
from .nonlinear import GatedNonlinearity, InvariantPool, NormNonlinearity, PointwiseNonlinearity, SetPool
from .reps import (
    Rep,
    clear_basis_cache,
    equivariant_basis,
    group_by_name,
    irrep,
    parse_rep,
    regular,
    sign,
    standard,
    trivial,
)
from .survey import SymmetrySurvey, symmetry_survey
from .weights import (
    Alignment,
    Axis,
    Barrier,
    PermutationSpec,
    align,
    canonical_form,
    interpolation_barrier,
    permutation_spec,
    permute_hidden,
    random_perms,
    rescale_hidden,
    weight_distance,
)
from .transforms import IMAGE_TRANSFORMS, flip, rot90, rotate, scale, shift, translate

__all__ = ["Group", "FiniteGroup", "MatrixGroup", "cyclic", "dihedral", "symmetric", "direct_product", "SO2", "O2",
           "SO3", "O3", "MAX_ORDER", "Rep", "trivial", "standard", "regular", "sign", "irrep", "equivariant_basis",
           "clear_basis_cache", "EquivariantLinear", "equivariance_error", "EquivarianceError",
           "LayerEquivarianceError", "lie_derivative", "LieDerivative", "IMAGE_TRANSFORMS", "translate", "rotate",
           "scale", "shift", "flip", "rot90", "parse_rep", "group_by_name", "symmetry_survey", "SymmetrySurvey",
           "Axis", "PermutationSpec", "permutation_spec", "permute_hidden", "random_perms", "Alignment", "align",
           "weight_distance", "Barrier", "interpolation_barrier", "rescale_hidden", "canonical_form",
           "GroupConv2d", "GroupPool", "act_on_image", "act_on_features", "multiplication_table", "element_name",
           "PointwiseNonlinearity", "NormNonlinearity", "GatedNonlinearity", "InvariantPool", "SetPool"]
