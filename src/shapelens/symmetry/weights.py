"""Weight-space symmetries of MLPs and CNNs: hidden-unit permutations and ReLU rescalings.

Permuting the hidden units of a layer (the rows of the weights that write them, the matching
entries of their bias and normalisation parameters, and the columns of every weight that reads
them) leaves the network's function unchanged. Two networks trained from different seeds differ
by such a permutation (and more); aligning one to the other before averaging their weights
makes the straight path between them nearly loss-free for wide enough networks (Ainsworth,
Hayase & Srinivasa 2023, "Git Re-Basin: Merging Models modulo Permutation Symmetries", ICLR;
Entezari et al. 2022, "The role of permutation invariance in linear mode connectivity of neural
networks", ICLR).

The permutation structure is derived from the model itself, not written by hand:
:func:`permutation_spec` traces the model with ``torch.fx.symbolic_trace`` and propagates
*permutation groups* through the graph:

* every ``nn.Linear`` / ``nn.Conv1d/2d/3d`` output axis starts a group, named after that layer;
* its consumers share it: the next Linear/Conv input axis, BatchNorm / InstanceNorm / LayerNorm /
  GroupNorm (1 or C groups) / PReLU per-channel parameters and running statistics, biases, and
  per-channel parameters multiplied or added in ``forward``;
* elementwise activations, dropout, identity, pooling over the trailing (spatial) axes,
  softmax, and reductions over other axes pass a group through;
* ``x + y`` (a residual connection) *merges* the groups of its operands (union-find), so a
  residual stream is one group, permuted as a whole (named after the layer that starts it);
* flattening a conv output ``(C, H, W)`` makes the next Linear read the channel permutation as
  blocks of ``H*W`` input features;
* the model's input and output axes are never permuted: a group that reaches either (e.g. a
  residual connection added to the raw input) is *pinned* and left alone.

Anything else (attention, concatenation, splits, slicing, reshapes the parser cannot follow,
grouped convolutions, functional layers, unknown modules or functions) is refused with an error
naming the module or node and saying what to do.

On top of it: :func:`permute_hidden`, :func:`random_perms`, :func:`align` (weight matching,
Algorithm 1 of Ainsworth et al., and activation matching, their Section 3.1),
:func:`interpolation_barrier` (loss and accuracy along the linear path, barrier heights), and
the positive rescaling symmetry of ReLU networks (:func:`rescale_hidden`,
:func:`canonical_form`; Neyshabur, Salakhutdinov & Srebro 2015, "Path-SGD"; Dinh et al. 2017,
"Sharp minima can generalize for deep nets").
"""

from __future__ import annotations

import builtins
import copy
import dataclasses
import math
import operator
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, show_progress, warn
from .._results import Result, jsonable
from ..probe import eval_mode

__all__ = [
    "Axis",
    "PermutationSpec",
    "permutation_spec",
    "permute_hidden",
    "random_perms",
    "Alignment",
    "align",
    "weight_distance",
    "Barrier",
    "interpolation_barrier",
    "rescale_hidden",
    "canonical_form",
]

_HOW_TO = (
    "Alignment supports networks built from nn.Linear / nn.Conv1d-3d (groups=1 or depthwise), "
    "BatchNorm / InstanceNorm / LayerNorm / GroupNorm (1 or C groups), elementwise activations, dropout, "
    "pooling, flatten and residual additions"
)


# ======================================================================================
# the specification a trace produces
# ======================================================================================


class Axis(NamedTuple):
    """One permuted axis of a parameter or buffer.

    The axis, viewed as ``(outer, size, inner)`` (C order), has its middle factor permuted by
    the group ``group``. An ordinary axis has ``outer = inner = 1``; the input axis of a Linear
    that reads a flattened ``(C, H, W)`` conv output has ``outer = 1, inner = H*W`` (channel c
    owns input features ``c*H*W .. (c+1)*H*W - 1``); a Linear reading a flattened ``(T, D)``
    token tensor has ``outer = T, inner = 1``.
    """

    group: str
    outer: int = 1
    inner: int = 1


@dataclass(frozen=True)
class PermutationSpec(Result):
    """The permutation (and rescaling) structure of a model, derived by :func:`permutation_spec`.

    Attributes
    ----------
    groups : ordered dict group name -> number of units, in execution order. A group is named
        after the first layer (in execution order) that writes into it: ``"fc1"`` for the
        hidden units of ``fc1``; for a residual stream, the layer that starts the stream
        (e.g. the stem).
    axes : dict parameter/buffer name (as in ``model.named_parameters()`` /
        ``named_buffers()``) -> one :class:`Axis` or ``None`` per tensor axis. Tensors that no
        group touches are left out.
    members : dict group name -> the layers whose outputs were merged into it (one layer for a
        plain hidden layer; every block's last layer for a residual stream).
    pinned : layers whose output units cannot be permuted because they reach the model's input
        or output (the last layer, or a layer added to the raw input).
    scalings : ordered dict scaling-group name -> number of units: the hidden units for which
        the positive rescaling symmetry holds (see :func:`rescale_hidden`); named after the
        layer that writes the rescaled values (``"fc1"``; ``"bn1"`` for a conv followed by
        BatchNorm, whose affine parameters carry the scale).
    not_rescalable : dict scaling-group name -> why it cannot be rescaled (e.g. it passes
        through tanh, or is normalised by BatchNorm).
    """

    groups: dict
    axes: dict
    members: dict
    pinned: tuple
    scalings: dict
    not_rescalable: dict

    def touching(self, group: str) -> list[tuple[str, int, Axis]]:
        """Every ``(tensor name, axis index, Axis)`` that the group ``group`` permutes."""
        if group not in self.groups:
            raise KeyError(f"unknown group {group!r}; the model's groups are {list(self.groups)}.")
        return [(name, i, ax) for name, axes in self.axes.items() for i, ax in enumerate(axes)
                if ax is not None and ax.group == group]

    def describe(self) -> str:
        """A plain-text table: group, size, layers merged into it, tensors it permutes."""
        lines = [f"{'group':<28} {'units':>6}  members / permuted tensors"]
        for g, n in self.groups.items():
            tensors = sorted({name for name, _, _ in self.touching(g)})
            lines.append(f"{g:<28} {n:>6}  {', '.join(self.members[g])}  |  {', '.join(tensors)}")
        if self.pinned:
            lines.append(f"pinned (reach the model's input or output): {', '.join(self.pinned)}")
        return "\n".join(lines)

    def __str__(self) -> str:  # pragma: no cover - convenience
        return self.describe()


# ======================================================================================
# the parser: torch.fx trace -> groups by union-find
# ======================================================================================


@dataclass(frozen=True)
class _T:
    """Abstract value of a tensor node: which group permutes which axis."""

    group: int  # union-find id; 0 = pinned (model input/output, or invariant)
    seg: int  # rescaling segment id; 0 = not rescalable
    axis: int | None  # the permuted axis: >= 0 from the front, < 0 from the end
    ndim: int | None  # number of axes when known
    flat: str | None = None  # None, "outer" (layout [g, inner]) or "inner" (layout [outer, g])


class _Meta:
    """A non-tensor value computed from tensors (sizes, shapes, dtypes)."""


_META = _Meta()


@dataclass(frozen=True)
class _Attr:
    """A parameter or buffer fetched inside ``forward`` (``get_attr``)."""

    name: str
    shape: tuple


@dataclass(frozen=True)
class _Const:
    value: Any


_CONVS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_POOL_MODULES = (
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
# positively homogeneous (f(s x) = s f(x) for s > 0), elementwise
_HOMOGENEOUS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
                        nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
# elementwise (so permutation-equivariant) but not positively homogeneous
_ELEMENTWISE_MODULES = (
    nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Hardtanh,
    nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid,
    nn.Hardshrink, nn.Softshrink, nn.Threshold, nn.Softmax, nn.LogSoftmax, nn.Softmin,
)
_HOMOGENEOUS_FUNCS = {F.relu, torch.relu, F.relu_, torch.relu_, F.leaky_relu, F.dropout, F.dropout1d,
                      F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout, operator.neg,
                      torch.neg, torch.abs, operator.abs}
_HOMOGENEOUS_METHODS = {"relu", "relu_", "neg", "abs", "contiguous", "clone", "detach"}
_ELEMENTWISE_FUNCS = {F.gelu, torch.tanh, F.tanh, torch.sigmoid, F.sigmoid, F.silu, F.elu, F.selu, F.celu,
                      F.softplus, F.hardtanh, F.relu6, F.mish, F.hardswish, F.hardsigmoid, F.softsign,
                      F.logsigmoid, torch.exp, torch.softmax, F.softmax, F.log_softmax, torch.log_softmax,
                      torch.pow, operator.pow, torch.sqrt, torch.square, torch.log, torch.sin, torch.cos,
                      torch.clamp, torch.erf}
_ELEMENTWISE_METHODS = {"tanh", "sigmoid", "exp", "softmax", "log_softmax", "pow", "sqrt", "square", "log",
                        "sin", "cos", "clamp", "erf"}
_POOL_FUNCS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
               F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
               F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, torch.max_pool1d,
               torch.max_pool2d, torch.avg_pool1d, F.interpolate}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub}
_MUL_FUNCS = {operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv, torch.div}
_DIV_FUNCS = {operator.truediv, operator.itruediv, torch.div}
_REDUCE_FUNCS = {torch.mean, torch.sum, torch.amax}
_MIX_FUNCS = {torch.cat, torch.concat, torch.concatenate, torch.stack, torch.split, torch.chunk,
              torch.unbind, torch.hstack, torch.vstack}
_MATMUL_FUNCS = {torch.matmul, operator.matmul, torch.bmm, torch.mm, torch.einsum,
                 F.scaled_dot_product_attention, torch.baddbmm}
_FUNCTIONAL_LAYERS = {F.linear, F.conv1d, F.conv2d, F.conv3d, F.batch_norm, F.layer_norm, F.group_norm,
                      F.instance_norm, F.embedding, F.bilinear}
_ATTENTION_TYPES = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
                    nn.TransformerEncoder, nn.TransformerDecoder, nn.Transformer)


class _Parsed:
    """Everything a trace gives: the public spec plus what the algorithms need."""

    def __init__(self, spec, gm, reads, segments):
        self.spec: PermutationSpec = spec
        self.gm = gm
        self.reads: dict[str, list[tuple[str, tuple]]] = reads  # group -> [(node name, layout)]
        self.segments: dict[str, dict] = segments  # scaling name -> {"writers", "readers", "size"}


class _Parser:
    def __init__(self, model: nn.Module, gm):
        self.model = model
        self.gm = gm
        self.modules = dict(model.named_modules())
        self.canon: dict[int, str] = {}
        self.tensors: dict[str, torch.Tensor] = {}
        for n, t in model.named_parameters():
            self.canon.setdefault(id(t), n)
            self.tensors.setdefault(n, t)
        for n, t in model.named_buffers():
            if t is not None:
                self.canon.setdefault(id(t), n)
                self.tensors.setdefault(n, t)
        # permutation groups (union-find)
        self.parent = [0]
        self.gsize: list[int | None] = [None]
        self.gname = ["<model input/output>"]
        # rescaling segments (union-find)
        self.sparent = [0]
        self.sgroup = [0]
        self.sname = ["<model input/output>"]
        self.swriters: list[list] = [[]]
        self.sreaders: list[list] = [[]]
        self.sbad: list[str | None] = ["it reaches the model's input or output"]
        # tensor name -> per-axis [gid, outer, inner] or None
        self.axes: dict[str, list] = {}
        self.reads: dict[int, list] = defaultdict(list)
        self.module_seg: dict[str, int] = {}
        self.env: dict[Any, Any] = {}

    # ---------------------------------------------------------------- union-find
    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def sfind(self, s: int) -> int:
        while self.sparent[s] != s:
            self.sparent[s] = self.sparent[self.sparent[s]]
            s = self.sparent[s]
        return s

    def new_group(self, size: int, name: str) -> int:
        self.parent.append(len(self.parent))
        self.gsize.append(int(size))
        self.gname.append(name)
        return len(self.parent) - 1

    def size(self, g: int) -> int | None:
        return self.gsize[self.find(g)]

    def union(self, a: int, b: int, node) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        sa, sb = self.gsize[ra], self.gsize[rb]
        if sa is not None and sb is not None and sa != sb:
            raise self.fail(node, f"it ties the units of {self.gname[ra]!r} ({sa} units) to those of "
                                  f"{self.gname[rb]!r} ({sb} units), which differ in number",
                            "check the model's shapes")
        lo, hi = min(ra, rb), max(ra, rb)
        self.parent[hi] = lo
        if self.gsize[lo] is None or self.gsize[hi] is None:
            self.gsize[lo] = None if lo == 0 else (self.gsize[lo] or self.gsize[hi])
        return lo

    def new_seg(self, group: int, name: str, writers: list, bad: str | None = None) -> int:
        self.sparent.append(len(self.sparent))
        self.sgroup.append(group)
        self.sname.append(name)
        self.swriters.append([w for w in writers if w[0] is not None])
        self.sreaders.append([])
        if bad is None and not self.swriters[-1]:
            bad = f"no parameters of '{name}' write these values, so none can carry a scale"
        self.sbad.append(bad)
        return len(self.sparent) - 1

    def sunion(self, a: int, b: int) -> int:
        ra, rb = self.sfind(a), self.sfind(b)
        if ra == rb:
            return ra
        lo, hi = min(ra, rb), max(ra, rb)
        self.sparent[hi] = lo
        self.swriters[lo] += self.swriters[hi]
        self.sreaders[lo] += self.sreaders[hi]
        self.sbad[lo] = self.sbad[lo] or self.sbad[hi]
        return lo

    def mark_bad(self, seg: int, reason: str) -> None:
        r = self.sfind(seg)
        if self.sbad[r] is None:
            self.sbad[r] = reason

    # ---------------------------------------------------------------- helpers
    def fail(self, node, why: str, todo: str = "") -> ValueError:
        if node is None:
            where = "the model"
        elif node.op == "call_module":
            m = self.modules.get(node.target)
            where = f"module {node.target!r} ({type(m).__name__}, fx node {node.name!r})"
        elif node.op == "call_method":
            where = f"node {node.name!r} (method .{node.target}())"
        elif node.op == "call_function":
            fname = getattr(node.target, "__name__", repr(node.target))
            where = f"node {node.name!r} (function {fname})"
        else:
            where = f"node {node.name!r}"
        todo = todo or (_HOW_TO + "; rewrite this part with those, or align the supported part of the model separately")
        return ValueError(f"cannot align through {where}: {why}. {todo[:1].upper() + todo[1:]}.")

    def pname(self, module_name: str, attr: str) -> str | None:
        m = self.modules[module_name]
        t = getattr(m, attr, None)
        if not isinstance(t, torch.Tensor):
            return None
        return self.canon.get(id(t))

    def assign(self, pname: str | None, axis: int, gid: int, node, outer: int = 1, inner: int = 1) -> None:
        if pname is None:
            return
        t = self.tensors[pname]
        lst = self.axes.setdefault(pname, [None] * t.ndim)
        if lst[axis] is None:
            lst[axis] = [gid, outer, inner]
            return
        old = lst[axis]
        if (old[1], old[2]) != (outer, inner) and self.find(gid) != 0 and self.find(old[0]) != 0:
            raise self.fail(node, f"axis {axis} of {pname!r} is read with two different layouts", "")
        old[0] = self.union(old[0], gid, node)

    def existing_group(self, pname: str | None, axis: int) -> int | None:
        if pname is None or pname not in self.axes or self.axes[pname][axis] is None:
            return None
        return self.axes[pname][axis][0]

    def is_last(self, x: _T) -> bool:
        return x.axis == -1 or (x.ndim is not None and x.axis == x.ndim - 1)

    def is_channel(self, x: _T) -> bool:
        if x.axis == 1:
            return True
        return x.ndim is not None and x.axis is not None and x.axis < 0 and x.axis + x.ndim == 1

    def norm_axis(self, x: _T) -> int | None:
        if x.axis is None:
            return None
        if x.axis >= 0:
            return x.axis
        return x.axis + x.ndim if x.ndim is not None else None

    def gdesc(self, x: _T) -> str:
        return f"group {self.gname[self.find(x.group)]!r} ({self.size(x.group)} units)"

    def read(self, x: _T, src_node, layout: tuple, writer: tuple | None) -> None:
        """Record that a layer reads x's units: as a reader of its rescaling segment and as a
        place where activation matching looks at the group."""
        if writer is not None and writer[0] is not None:
            r = self.sfind(x.seg)
            self.sreaders[r].append(writer)
        if self.find(x.group) != 0 and hasattr(src_node, "name"):
            self.reads[x.group].append((src_node.name, layout))

    def val(self, a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            return self.env[a]
        return _Const(a)

    def tensor_arg(self, node, i: int = 0) -> _T:
        args = node.args
        if len(args) <= i:
            raise self.fail(node, "it is called without a tensor argument", "")
        v = self.val(args[i])
        if not isinstance(v, _T):
            raise self.fail(node, "its input is not a tensor computed from the model's input", "")
        return v

    # ---------------------------------------------------------------- main loop
    def run(self) -> _Parsed:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.env[node] = _T(0, 0, None, None)
            elif node.op == "get_attr":
                t = self.attr(node.target)
                if isinstance(t, torch.Tensor) and id(t) in self.canon:
                    self.env[node] = _Attr(self.canon[id(t)], tuple(t.shape))
                else:
                    self.env[node] = _META
            elif node.op == "call_module":
                self.env[node] = self.module(node)
            elif node.op in ("call_function", "call_method"):
                self.env[node] = self.function(node)
            elif node.op == "output":
                self.output(node)
        return self.resolve()

    def attr(self, target: str) -> Any:
        obj: Any = self.model
        for part in target.split("."):
            obj = getattr(obj, part, None)
        return obj

    def output(self, node) -> None:
        def walk(a):
            if isinstance(a, torch.fx.Node):
                v = self.env[a]
                if isinstance(v, _T):
                    self.union(v.group, 0, node)
                    self.sunion(v.seg, 0)
            elif isinstance(a, (tuple, list)):
                for b in a:
                    walk(b)
            elif isinstance(a, Mapping):
                for b in a.values():
                    walk(b)

        walk(node.args)

    # ---------------------------------------------------------------- modules
    def module(self, node) -> Any:
        name = node.target
        m = self.modules.get(name)
        if m is None:
            raise self.fail(node, "the traced module is not a submodule of the model", "")
        if isinstance(m, _ATTENTION_TYPES):
            raise self.fail(node, "attention mixes the units of a layer across heads and tokens through "
                                  "query-key products, which need a per-head permutation spec this parser does not derive",
                            _HOW_TO + "; align an attention model's MLP blocks separately, or write its spec by hand "
                                      "following Ainsworth et al. (2023), Appendix")
        x = self.tensor_arg(node, 0)
        if type(m) in _CONVS:
            return self.conv(node, name, m, x)
        if isinstance(m, nn.Linear):
            return self.linear(node, name, m, x)
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
            return self.channel_norm(node, name, m, x, m.num_features)
        if isinstance(m, nn.GroupNorm):
            if m.num_groups not in (1, m.num_channels):
                raise self.fail(node, f"GroupNorm normalises {m.num_groups} groups of "
                                      f"{m.num_channels // m.num_groups} channels together, so a permutation "
                                      "would have to keep every channel inside its group",
                                "use GroupNorm with 1 or C groups (LayerNorm- or InstanceNorm-like), or BatchNorm")
            return self.channel_norm(node, name, m, x, m.num_channels)
        if isinstance(m, nn.LayerNorm):
            return self.layer_norm(node, name, m, x)
        if isinstance(m, nn.PReLU):
            if m.num_parameters > 1 and self.find(x.group) != 0:
                if x.flat or not (self.is_channel(x) or (x.axis == -1 and x.ndim in (None, 2))):
                    raise self.fail(node, f"PReLU has one slope per channel (axis 1) but {self.gdesc(x)} is on "
                                          f"axis {x.axis}", "")
            if m.num_parameters > 1:
                self.assign(self.pname(name, "weight"), 0, x.group, node)
            return x
        if isinstance(m, _HOMOGENEOUS_MODULES):
            return x
        if isinstance(m, _ELEMENTWISE_MODULES):
            self.mark_bad(x.seg, f"its values pass through '{name}' ({type(m).__name__}), which is not "
                                 "positively homogeneous")
            return x
        if isinstance(m, _POOL_MODULES):
            if getattr(m, "return_indices", False):
                raise self.fail(node, "pooling with return_indices=True returns a tuple", "")
            return self.pool(node, x)
        if isinstance(m, nn.Flatten):
            return self.flatten(node, x, m.start_dim, m.end_dim)
        raise self.fail(node, f"{type(m).__name__} is not a layer whose permutation structure is known")

    def linear(self, node, name: str, m: nn.Linear, x: _T) -> _T:
        W, b = self.pname(name, "weight"), self.pname(name, "bias")
        if self.find(x.group) != 0:
            n = self.size(x.group)
            if x.flat is None:
                if not self.is_last(x):
                    raise self.fail(node, f"nn.Linear reads the last axis, but {self.gdesc(x)} is on axis "
                                          f"{x.axis} of its input", "flatten the input first (nn.Flatten or "
                                                                    "torch.flatten(x, 1))")
                outer = inner = 1
                if n != m.in_features:
                    raise self.fail(node, f"in_features={m.in_features} but its input carries {self.gdesc(x)}", "")
            else:
                if m.in_features % n:
                    raise self.fail(node, f"in_features={m.in_features} is not a multiple of the {n} units of "
                                          f"{self.gdesc(x)} it reads after a flatten", "")
                k = m.in_features // n
                outer, inner = (1, k) if x.flat == "outer" else (k, 1)
            self.assign(W, 1, x.group, node, outer, inner)
            self.read(x, node.args[0], ("flat", outer, inner) if x.flat else ("axis", -1), (W, 1, outer, inner))
        else:
            self.assign(W, 1, 0, node)
        gid = self.existing_group(W, 0)
        if gid is None:
            gid = self.new_group(m.out_features, name)
        self.assign(W, 0, gid, node)
        self.assign(b, 0, gid, node)
        seg = self.module_seg.get(name)
        if seg is None:
            seg = self.module_seg[name] = self.new_seg(gid, name, [(W, 0, 1, 1), (b, 0, 1, 1)])
        return _T(gid, seg, -1, x.ndim)

    def conv(self, node, name: str, m: nn.Module, x: _T) -> _T:
        nd = _CONVS[type(m)]
        W, b = self.pname(name, "weight"), self.pname(name, "bias")
        pinned_in = self.find(x.group) == 0
        if not pinned_in:
            if x.flat or not self.is_channel(x) or (x.ndim is not None and x.ndim != nd + 2):
                raise self.fail(node, f"{type(m).__name__} reads channels on axis 1 of a {nd + 2}-d tensor, but "
                                      f"{self.gdesc(x)} is on axis {x.axis}" + (f" of a {x.ndim}-d tensor" if x.ndim else ""), "")
            if self.size(x.group) != m.in_channels:
                raise self.fail(node, f"in_channels={m.in_channels} but its input carries {self.gdesc(x)}", "")
        if m.groups == 1:
            if not pinned_in:
                self.assign(W, 1, x.group, node)
                self.read(x, node.args[0], ("axis", 1), (W, 1, 1, 1))
            else:
                self.assign(W, 1, 0, node)
            gid = self.existing_group(W, 0)
            if gid is None:
                gid = self.new_group(m.out_channels, name)
        elif m.groups == m.in_channels == m.out_channels:  # depthwise: channel c reads channel c only
            gid = x.group
            if not pinned_in:
                self.read(x, node.args[0], ("axis", 1), (W, 0, 1, 1))
        else:
            raise self.fail(node, f"a grouped convolution (groups={m.groups}, {m.in_channels} -> {m.out_channels} "
                                  "channels) ties channels to groups; only groups=1 and depthwise (groups = in = out "
                                  "channels) are supported", "")
        self.assign(W, 0, gid, node)
        self.assign(b, 0, gid, node)
        seg = self.module_seg.get(name)
        if seg is None:
            seg = self.module_seg[name] = self.new_seg(gid, name, [(W, 0, 1, 1), (b, 0, 1, 1)])
        return _T(gid, seg, 1, nd + 2)

    def channel_norm(self, node, name: str, m: nn.Module, x: _T, n_features: int) -> _T:
        if self.find(x.group) != 0:
            ok = self.is_channel(x) or (isinstance(m, nn.BatchNorm1d) and x.axis == -1 and x.ndim in (None, 2))
            if x.flat or not ok:
                raise self.fail(node, f"{type(m).__name__} normalises channels on axis 1 but {self.gdesc(x)} is "
                                      f"on axis {x.axis}", "")
            if self.size(x.group) != n_features:
                raise self.fail(node, f"it has {n_features} features but its input carries {self.gdesc(x)}", "")
        for attr in ("weight", "bias", "running_mean", "running_var"):
            self.assign(self.pname(name, attr), 0, x.group, node)
        self.mark_bad(x.seg, f"it is normalised by '{name}' ({type(m).__name__}), which undoes a scale")
        W, b = self.pname(name, "weight"), self.pname(name, "bias")
        seg = self.module_seg.get(name)
        if seg is None:
            seg = self.module_seg[name] = self.new_seg(x.group, name, [(W, 0, 1, 1), (b, 0, 1, 1)])
        return _T(x.group, seg, x.axis, x.ndim)

    def layer_norm(self, node, name: str, m: nn.LayerNorm, x: _T) -> _T:
        k = len(m.normalized_shape)
        j = None
        if self.find(x.group) != 0:
            if x.flat:
                raise self.fail(node, "LayerNorm after a flatten of a hidden tensor is not supported", "")
            if self.is_last(x):
                j = k - 1
            elif x.ndim is not None:
                j = self.norm_axis(x) - (x.ndim - k)
            if j is None or not 0 <= j < k:
                raise self.fail(node, f"LayerNorm normalises the last {k} axes, but {self.gdesc(x)} is on axis "
                                      f"{x.axis}", "")
            if m.normalized_shape[j] != self.size(x.group):
                raise self.fail(node, f"normalized_shape={tuple(m.normalized_shape)} does not match {self.gdesc(x)}", "")
        W, b = self.pname(name, "weight"), self.pname(name, "bias")
        if j is not None:
            self.assign(W, j, x.group, node)
            self.assign(b, j, x.group, node)
        self.mark_bad(x.seg, f"it is normalised by '{name}' (LayerNorm), which undoes a scale")
        seg = self.module_seg.get(name)
        if seg is None:
            if j is None or k != 1:
                seg = self.new_seg(x.group, name, [], bad=f"'{name}' normalises over several axes")
            else:
                seg = self.new_seg(x.group, name, [(W, j, 1, 1), (b, j, 1, 1)])
            self.module_seg[name] = seg
        return _T(x.group, seg, x.axis, x.ndim)

    def pool(self, node, x: _T) -> _T:
        if self.find(x.group) != 0:
            if x.flat or not self.is_channel(x) or (x.ndim is not None and x.ndim < 3):
                raise self.fail(node, f"pooling acts on the trailing axes, which would mix the units of "
                                      f"{self.gdesc(x)} on axis {x.axis}" + (f" of a {x.ndim}-d tensor" if x.ndim else ""), "")
        return x

    def flatten(self, node, x: _T, s: int, e: int) -> _T:
        n = x.ndim
        if self.find(x.group) == 0:
            if n is not None:
                s_n, e_n = s % n, e % n
                return _T(0, 0, None, n - (e_n - s_n))
            return _T(0, 0, None, None)
        if x.flat:
            raise self.fail(node, "it flattens a tensor that was already flattened", "flatten once, with torch.flatten(x, 1)")
        if n is not None:
            s_n, e_n, a = s % n, e % n, self.norm_axis(x)
            if s_n >= e_n:
                return x
            new_ndim = n - (e_n - s_n)
            if a < s_n:
                return _T(x.group, x.seg, a, new_ndim)
            if a > e_n:
                return _T(x.group, x.seg, a - (e_n - s_n), new_ndim)
            if a == s_n:
                return _T(x.group, x.seg, s_n, new_ndim, "outer")
            if a == e_n:
                return _T(x.group, x.seg, s_n, new_ndim, "inner")
            raise self.fail(node, f"the flattened axes {s_n}..{e_n} put {self.gdesc(x)} (axis {a}) in the middle", "")
        if x.axis == -1:
            if e == -1:
                return x if s == -1 else _T(x.group, x.seg, -1, None, "inner")
            if e < -1:
                return x
        raise self.fail(node, f"it flattens axes {s}..{e} of a tensor whose number of axes is unknown", "")

    # ---------------------------------------------------------------- functions and methods
    def function(self, node) -> Any:
        t = node.target
        is_m = node.op == "call_method"
        args = [self.val(a) for a in node.args]
        kw = {k: self.val(v) for k, v in node.kwargs.items()}
        first = args[0] if args else None

        # non-tensor bookkeeping (sizes, shapes)
        if (is_m and t in ("size", "dim", "numel")) or (t is builtins.getattr and len(node.args) > 1
                                                          and node.args[1] in ("shape", "ndim", "dtype", "device")):
            return _META
        if t is operator.getitem:
            if isinstance(first, _T):
                raise self.fail(node, "it indexes or slices a hidden tensor, which this parser cannot follow",
                                "index only the model's input or output")
            return _META

        # mixing: concatenation, splitting, attention, functional layers
        if (not is_m and t in _MIX_FUNCS) or (is_m and t in ("split", "chunk", "unbind", "tensor_split")):
            raise self.fail(node, "concatenating or splitting feature axes makes a block permutation this parser "
                                  "does not derive", "align the branches as separate models, or replace the concatenation "
                                                     "by a sum where that is what is meant")
        if (not is_m and t in _MATMUL_FUNCS) or (is_m and t in ("matmul", "bmm", "mm", "transpose", "permute", "t",
                                                                "unsqueeze", "squeeze", "expand", "repeat")):
            raise self.fail(node, "matrix products and axis rearrangements between hidden tensors (as in attention) "
                                  "are not followed")
        if not is_m and t in _FUNCTIONAL_LAYERS:
            raise self.fail(node, "a functional layer (F.linear, F.conv2d, ...) hides which parameters it uses",
                            "use the module (nn.Linear, nn.Conv2d, ...) instead")

        if not is_m and t in _HOMOGENEOUS_FUNCS or is_m and t in _HOMOGENEOUS_METHODS:
            return self._unary(node, first)
        if not is_m and t in _ELEMENTWISE_FUNCS or is_m and t in _ELEMENTWISE_METHODS:
            if sum(isinstance(a, (_T, _Attr)) for a in list(args) + list(kw.values())) > 1:
                raise self.fail(node, "an elementwise function of two hidden tensors is not followed")
            x = self._unary(node, first)
            if isinstance(x, _T):
                self.mark_bad(x.seg, f"its values pass through node '{node.name}', which is not positively homogeneous")
            return x
        if not is_m and t in _POOL_FUNCS:
            ri = kw.get("return_indices")
            if isinstance(ri, _Const) and ri.value:
                raise self.fail(node, "pooling with return_indices=True returns a tuple", "")
            return self.pool(node, self._unary(node, first))
        if t is torch.flatten or (is_m and t == "flatten"):
            x = self._unary(node, first)
            s = self._const_arg(node, args, kw, 1, "start_dim", 0)
            e = self._const_arg(node, args, kw, 2, "end_dim", -1)
            return self.flatten(node, x, s, e) if isinstance(x, _T) else x
        if t is torch.reshape or (is_m and t in ("view", "reshape")):
            return self._view(node, first, args[1:])
        if (not is_m and t in _ADD_FUNCS) or (is_m and t in ("add", "add_", "sub", "sub_")):
            return self._binary(node, args, "add")
        if (not is_m and t in _MUL_FUNCS) or (is_m and t in ("mul", "mul_", "div", "div_")):
            divide = (not is_m and t in _DIV_FUNCS) or (is_m and t in ("div", "div_"))
            return self._binary(node, args, "div" if divide else "mul")
        if (not is_m and t in _REDUCE_FUNCS) or (is_m and t in ("mean", "sum", "amax")):
            return self._reduce(node, first, args, kw)
        if is_m and t in ("float", "double", "to", "type_as"):
            return first if isinstance(first, _T) else _META
        if not any(isinstance(a, (_T, _Attr)) for a in list(args) + list(kw.values())):
            return _META  # arithmetic on sizes and constants
        raise self.fail(node, "this operation is not one whose effect on hidden units is known")

    def _unary(self, node, x: Any) -> Any:
        if isinstance(x, _T):
            return x
        if isinstance(x, _Attr):
            raise self.fail(node, "it computes on a parameter outside a layer", "")
        return _META

    def _const_arg(self, node, args, kw, i, name, default):
        v = args[i] if len(args) > i else kw.get(name, _Const(default))
        if not isinstance(v, _Const) or not isinstance(v.value, int):
            raise self.fail(node, f"its {name} is not a constant integer", "")
        return v.value

    def _view(self, node, x: Any, shape: list) -> Any:
        if len(shape) == 1 and isinstance(shape[0], _Const) and isinstance(shape[0].value, (tuple, list)):
            shape = [self.val(v) for v in shape[0].value]
        if not isinstance(x, _T):
            return self._unary(node, x)
        flat_like = False
        if len(shape) == 2:
            d0, d1 = shape
            if isinstance(d1, _Const) and d1.value == -1 and (isinstance(d0, _Meta) or isinstance(d0, _Const)):
                flat_like = True  # x.view(x.size(0), -1) / x.view(B, -1)
            elif isinstance(d0, _Const) and d0.value == -1 and isinstance(d1, (_Const, _Meta)):
                flat_like = True  # x.view(-1, 320): batch first, the rest flattened
        if flat_like:
            return self.flatten(node, x, 1, -1)
        if self.find(x.group) == 0:
            return _T(0, 0, None, len(shape))
        raise self.fail(node, "a view/reshape other than flattening everything after the batch axis cannot be followed",
                        "use torch.flatten(x, 1) or nn.Flatten()")

    def _reduce(self, node, x: Any, args: list, kw: dict) -> Any:
        if not isinstance(x, _T):
            return self._unary(node, x)
        dim = args[1] if len(args) > 1 else kw.get("dim", _Const(None))
        keep = args[2] if len(args) > 2 else kw.get("keepdim", _Const(False))
        if not isinstance(dim, _Const) or not isinstance(keep, _Const):
            raise self.fail(node, "its reduction axes are not constants", "")
        dims, keepdim = dim.value, bool(keep.value)
        if self.find(x.group) == 0 or dims is None:
            return _T(0, 0, None, None)
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if x.flat:
            raise self.fail(node, "reducing a flattened hidden tensor is not supported", "")
        if x.ndim is not None:
            dn = {d % x.ndim for d in dims}
            a = self.norm_axis(x)
            if a in dn:  # the sum over a group's units is invariant under its permutation
                self.read(x, node.args[0], ("axis", a), None)
                self.mark_bad(x.seg, f"node '{node.name}' sums over its units")
                return _T(0, 0, None, None)
            if keepdim:
                return x
            return _T(x.group, x.seg, a - sum(d < a for d in dn), x.ndim - len(dn))
        if x.axis == -1 and all(d < 0 for d in dims):
            if -1 in dims:
                self.read(x, node.args[0], ("axis", -1), None)
                self.mark_bad(x.seg, f"node '{node.name}' sums over its units")
                return _T(0, 0, None, None)
            return x
        raise self.fail(node, "it reduces axes of a tensor whose number of axes is unknown", "")

    def _param_axis(self, node, x: _T, p: _Attr) -> int | None:
        """The axis of a broadcast parameter that lines up with x's permuted axis (None: it
        broadcasts over the units)."""
        k = len(p.shape)
        if k == 0 or int(np.prod(p.shape)) == 1:
            return None
        if x.flat:
            raise self.fail(node, f"parameter {p.name!r} meets a flattened hidden tensor", "")
        if x.ndim is not None and x.axis is not None:
            j = self.norm_axis(x) - (x.ndim - k)
        elif x.axis == -1:
            j = k - 1
        else:
            raise self.fail(node, f"parameter {p.name!r} broadcasts against a tensor whose number of axes is unknown", "")
        if j < 0 or p.shape[j] == 1:
            return None
        if p.shape[j] != self.size(x.group):
            raise self.fail(node, f"parameter {p.name!r} of shape {p.shape} does not line up with {self.gdesc(x)}", "")
        return j

    def _binary(self, node, args: list, kind: str) -> Any:
        if len(args) < 2:
            raise self.fail(node, "it has fewer than two operands", "")
        a, b = args[0], args[1]
        ta, tb = isinstance(a, _T), isinstance(b, _T)
        if not ta and not tb:
            if isinstance(a, _Attr) or isinstance(b, _Attr):
                raise self.fail(node, "it computes on a parameter outside a layer", "")
            return _META
        if ta and tb:
            return self._merge(node, a, b, kind)
        x, o = (a, b) if ta else (b, a)
        x_is_divisor = kind == "div" and tb
        if isinstance(o, _Attr):
            pinned = self.find(x.group) == 0
            j = None if pinned else self._param_axis(node, x, o)
            if j is not None:
                self.assign(o.name, j, x.group, node)
                if kind == "add":
                    r = self.sfind(x.seg)
                    self.swriters[r].append((o.name, j, 1, 1))
            elif kind == "add" and not pinned:
                self.mark_bad(x.seg, f"node '{node.name}' adds a value that is the same for every unit")
        elif kind == "add" and not (isinstance(o, _Const) and o.value == 0):
            self.mark_bad(x.seg, f"node '{node.name}' adds a constant")
        if x_is_divisor:
            self.mark_bad(x.seg, f"node '{node.name}' divides by the hidden values")
        return x

    def _merge(self, node, a: _T, b: _T, kind: str) -> _T:
        ga, gb = self.find(a.group), self.find(b.group)
        if ga == 0 or gb == 0:
            self.union(ga, gb, node)
            self.sunion(a.seg, b.seg)
            self.sunion(a.seg, 0)
            return _T(0, 0, None, a.ndim if a.ndim is not None else b.ndim)
        na, nb = self.size(ga), self.size(gb)
        if na != nb and 1 in (na, nb):  # broadcasting a single unit: it stays put
            small, big = (a, b) if na == 1 else (b, a)
            self.union(small.group, 0, node)
            self.sunion(small.seg, 0)
            if kind != "add":
                self.mark_bad(big.seg, f"node '{node.name}' multiplies hidden values together")
            return big
        if a.flat != b.flat:
            raise self.fail(node, "it combines a flattened and an unflattened hidden tensor", "")
        same = False
        if a.ndim is not None and b.ndim is not None:
            same = a.axis is not None and b.axis is not None and \
                self.norm_axis(a) - a.ndim == self.norm_axis(b) - b.ndim
        else:
            same = a.axis == b.axis
        if not same:
            raise self.fail(node, f"it combines {self.gdesc(a)} on axis {a.axis} with {self.gdesc(b)} on axis {b.axis}", "")
        g = self.union(ga, gb, node)
        s = self.sunion(a.seg, b.seg)
        if kind != "add":
            self.mark_bad(s, f"node '{node.name}' multiplies hidden values together (degree 2)")
        ndim = a.ndim if a.ndim is not None else b.ndim
        axis = a.axis if a.ndim is not None or b.ndim is None else b.axis
        return _T(g, s, axis, ndim, a.flat)

    # ---------------------------------------------------------------- resolve
    def resolve(self) -> _Parsed:
        roots = sorted({self.find(g) for g in range(1, len(self.parent))} - {0})
        groups = OrderedDict((self.gname[r], int(self.gsize[r])) for r in roots)
        members: dict[str, list[str]] = {self.gname[r]: [] for r in roots}
        pinned = []
        for g in range(1, len(self.parent)):
            r = self.find(g)
            if r == 0:
                pinned.append(self.gname[g])
            else:
                members[self.gname[r]].append(self.gname[g])
        axes: dict[str, tuple] = {}
        for pname, lst in self.axes.items():
            out = []
            for entry in lst:
                if entry is None or self.find(entry[0]) == 0:
                    out.append(None)
                else:
                    out.append(Axis(self.gname[self.find(entry[0])], int(entry[1]), int(entry[2])))
            if any(o is not None for o in out):
                axes[pname] = tuple(out)
        reads: dict[str, list] = defaultdict(list)
        for g, lst in self.reads.items():
            r = self.find(g)
            if r == 0:
                continue
            for item in lst:
                if item not in reads[self.gname[r]]:
                    reads[self.gname[r]].append(item)
        scalings: dict[str, int] = OrderedDict()
        not_rescalable: dict[str, str] = {}
        segments: dict[str, dict] = {}
        for s in sorted({self.sfind(i) for i in range(1, len(self.sparent))} - {0}):
            name = self.sname[s]
            gr = self.find(self.sgroup[s])
            if gr == 0:
                not_rescalable[name] = "its units reach the model's input or output"
                continue
            if self.sbad[s] is not None:
                not_rescalable[name] = self.sbad[s]
                continue
            size = int(self.gsize[gr])
            scalings[name] = size
            segments[name] = {"writers": _dedup(self.swriters[s]), "readers": _dedup(self.sreaders[s]), "size": size}
        for s in range(1, len(self.sparent)):
            if self.sfind(s) == 0 and self.sname[s] not in scalings:
                not_rescalable.setdefault(self.sname[s], "its units reach the model's input or output")
        spec = PermutationSpec(groups=dict(groups), axes=axes, members={k: tuple(v) for k, v in members.items()},
                               pinned=tuple(pinned), scalings=dict(scalings), not_rescalable=not_rescalable)
        return _Parsed(spec, self.gm, dict(reads), segments)


def _dedup(items: list) -> list:
    out = []
    for it in items:
        if it[0] is not None and it not in out:
            out.append(it)
    return out


def _trace(model: nn.Module):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as exc:
        raise ValueError(
            f"torch.fx could not trace {type(model).__name__} ({type(exc).__name__}: {exc}); the permutation "
            "structure is read from a symbolic trace, so forward must not branch on tensor values or call "
            "untraceable code. Move data-dependent branches out of forward, or mark such helpers with "
            "torch.fx.wrap (they will then be refused by name)."
        ) from exc


def _parse(model: nn.Module) -> _Parsed:
    return _Parser(model, _trace(model)).run()


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """Derive the hidden-unit permutation groups of ``model`` from a ``torch.fx`` trace.

    This replaces the hand-written permutation specs of Ainsworth, Hayase & Srinivasa (2023,
    "Git Re-Basin") with one read off the graph: every Linear/Conv output starts a group; the
    layers and parameters that consume it join it; elementwise operations, pooling and dropout
    pass it on; residual additions merge groups (union-find), so each residual stream is one
    group; a flatten after a conv makes the next Linear read channel blocks. Groups that reach
    the model's input or output are pinned (never permuted).

    Returns a :class:`PermutationSpec` (``.groups``, ``.axes``, ``.members``, ``.describe()``).

    Raises
    ------
    ValueError naming the module or node for anything the parser cannot follow (attention,
    ``torch.cat`` / split, slicing, reshapes other than flattening, grouped convolutions,
    functional layers, unknown modules or functions), or when ``torch.fx`` cannot trace the
    model.

    Notes
    -----
    The number of axes of the model's input is not known from the trace; a Linear's output is
    treated as ``(..., features)`` and a BatchNorm1d applied to it as acting on a ``(batch,
    features)`` tensor (the usual MLP). Layer sizes are checked against each other, so a
    misreading raises instead of permuting silently.
    """
    return _parse(model).spec


# ======================================================================================
# permuting and rescaling tensors
# ======================================================================================


def _named_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    out = dict(model.named_parameters())
    for n, b in model.named_buffers():
        if b is not None:
            out.setdefault(n, b)
    return out


def _take_torch(t: torch.Tensor, i: int, ax: Axis, idx: torch.Tensor) -> torch.Tensor:
    shape = tuple(t.shape)
    n = shape[i] // (ax.outer * ax.inner)
    v = t.reshape(shape[:i] + (ax.outer, n, ax.inner) + shape[i + 1:])
    return v.index_select(i + 1, idx).reshape(shape)


def _take_np(a: np.ndarray, i: int, ax: Axis, idx: np.ndarray) -> np.ndarray:
    shape = a.shape
    n = shape[i] // (ax.outer * ax.inner)
    v = a.reshape(shape[:i] + (ax.outer, n, ax.inner) + shape[i + 1:])
    return np.take(v, idx, axis=i + 1).reshape(shape)


def _check_perms(spec: PermutationSpec, perms: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(perms, Mapping):
        raise TypeError(f"perms must be a dict group name -> index array, got {type(perms).__name__}.")
    out = {}
    for g, p in perms.items():
        if g not in spec.groups:
            hint = " (its units are pinned: they reach the model's input or output)" if g in spec.pinned else ""
            raise ValueError(f"unknown permutation group {g!r}{hint}; the model's groups are {list(spec.groups)} "
                             "(see permutation_spec(model).describe()).")
        arr = p.detach().cpu().numpy() if isinstance(p, torch.Tensor) else np.asarray(p)
        n = spec.groups[g]
        if arr.shape != (n,) or arr.dtype.kind not in "iu" or not np.array_equal(np.sort(arr), np.arange(n)):
            raise ValueError(f"perms[{g!r}] must be a permutation of range({n}) (an integer array of length {n} "
                             f"holding each index once), got shape {arr.shape} dtype {arr.dtype}.")
        out[g] = arr.astype(np.int64)
    return out


def _apply_perms(model: nn.Module, spec: PermutationSpec, perms: Mapping[str, np.ndarray]) -> None:
    named = _named_tensors(model)
    with torch.no_grad():
        for pname, axes in spec.axes.items():
            t = named[pname]
            out = t
            for i, ax in enumerate(axes):
                if ax is None or ax.group not in perms:
                    continue
                out = _take_torch(out, i, ax, torch.as_tensor(perms[ax.group], device=t.device))
            if out is not t:
                t.copy_(out)


def permute_hidden(model: nn.Module, perms: Mapping[str, Any]) -> nn.Module:
    """A copy of ``model`` with its hidden units permuted; its function is unchanged.

    Parameters
    ----------
    model : an MLP or CNN that :func:`permutation_spec` can parse.
    perms : dict group name -> index array ``p`` of length ``groups[name]``: unit ``i`` of the
        new model is unit ``p[i]`` of the old one (``W_new = W[p]`` on the axes that write the
        group, ``W[:, p]`` on those that read it). Group names are those of
        ``permutation_spec(model).groups``: the name of the layer that produces the group
        (e.g. ``"fc1"``, ``"features.0"``; a residual stream is named after the layer that
        starts it). Groups left out stay as they are.

    Returns a new model (``copy.deepcopy``; the input is not modified), with every parameter
    and buffer of each group (weights, biases, BatchNorm/LayerNorm parameters, running
    statistics) permuted consistently, as in Ainsworth, Hayase & Srinivasa (2023), Section 2.
    """
    spec = permutation_spec(model)
    checked = _check_perms(spec, perms)
    new = copy.deepcopy(model)
    _apply_perms(new, spec, checked)
    return new


def random_perms(model: nn.Module | PermutationSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """A uniformly random permutation of every group of ``model`` (or of a spec), seeded."""
    spec = model if isinstance(model, PermutationSpec) else permutation_spec(model)
    rng = np.random.default_rng(seed)
    return {g: rng.permutation(n) for g, n in spec.groups.items()}


def _check_pair(model_a: nn.Module, model_b: nn.Module) -> None:
    """Same tensor names and shapes, in the same order; the first difference is named."""
    for m, nm in ((model_a, "model_a"), (model_b, "model_b")):
        if not isinstance(m, nn.Module):
            raise TypeError(f"{nm} must be a torch.nn.Module, got {type(m).__name__}.")
    ta, tb = list(model_a.state_dict().items()), list(model_b.state_dict().items())
    for (na, a), (nb, b) in zip(ta, tb):
        if na != nb:
            raise ValueError(f"model_a and model_b differ: model_a has {na!r} where model_b has {nb!r}; "
                             "pass two models of the same architecture.")
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"model_a and model_b differ at {na!r}: shape {tuple(a.shape)} vs {tuple(b.shape)}; "
                             "pass two models of the same architecture (same layer widths).")
    if len(ta) != len(tb):
        longer, name = (ta, "model_a") if len(ta) > len(tb) else (tb, "model_b")
        raise ValueError(f"model_a and model_b differ: {name} has an extra tensor {longer[min(len(ta), len(tb))][0]!r}; "
                         "pass two models of the same architecture.")


def weight_distance(model_a: nn.Module, model_b: nn.Module) -> float:
    """Euclidean distance ``||theta_a - theta_b||`` over all parameters (float64)."""
    _check_pair(model_a, model_b)
    pa, pb = dict(model_a.named_parameters()), dict(model_b.named_parameters())
    total = 0.0
    for n, a in pa.items():
        d = a.detach().double().cpu() - pb[n].detach().double().cpu()
        total += float((d * d).sum())
    return math.sqrt(total)


# ======================================================================================
# alignment
# ======================================================================================


@dataclass(frozen=True)
class Alignment(Result):
    """Result of :func:`align`.

    Attributes
    ----------
    model : ``model_b`` with its hidden units permuted to match ``model_a`` (same function as
        ``model_b``).
    perms : dict group -> index array applied to ``model_b`` (``permute_hidden(model_b,
        perms)`` is ``model``).
    method : ``"weights"`` or ``"activations"``.
    distance_before, distance_after : ``||theta_a - theta_b||`` over all parameters, before and
        after permuting ``model_b``.
    iterations : passes over the groups (weight matching; 1 for activation matching).
    history : the weight distance at the start and after every pass (weight matching never
        lets it rise); ``[before, after]`` for activation matching.
    moved : dict group -> fraction of its units that the permutation moves.
    """

    model: Any
    perms: dict
    method: str
    distance_before: float
    distance_after: float
    iterations: int
    history: np.ndarray
    moved: dict

    def to_dict(self) -> dict:
        out = {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "model"}
        out["type"] = type(self).__name__
        return out


def align(
    model_a: nn.Module,
    model_b: nn.Module,
    method: str = "weights",
    data: Any = None,
    *,
    statistic: str = "inner",
    max_iter: int = 100,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool | None = None,
) -> Alignment:
    """Permute the hidden units of ``model_b`` to match ``model_a`` (Git Re-Basin).

    Ainsworth, Hayase & Srinivasa (2023), "Git Re-Basin: Merging Models modulo Permutation
    Symmetries", ICLR.

    * ``method="weights"`` (weight matching, their Algorithm 1, no data needed): maximise
      ``sum_l <W_l^A, P_l W_l^B P_{l-1}^T>`` over the permutations of all groups by
      coordinate descent: the groups in a random order (seeded) each pass, each step a linear
      assignment (``scipy.optimize.linear_sum_assignment``) on the sum over every weight the
      group touches (all of a residual stream's weights for a merged group), the other groups
      held fixed; until a pass improves nothing or ``max_iter`` passes. A step is kept only
      when it raises the exact objective, so the weight distance never increases.
    * ``method="activations"`` (activation matching, their Section 3.1): run both models on
      ``data``; for each group, the units' activations where the next layers read them (the
      post-activation inputs of every Linear/Conv that reads the group, spatial positions as
      samples; for a residual stream, the sum over every place the stream is read) give a
      ``units x units`` statistic, and a linear assignment maximises it. ``statistic="inner"``
      uses ``E[a_i b_j]`` (what minimises ``||Z_A - P Z_B||^2``, as in the authors' code),
      ``"correlation"`` the Pearson correlation.

    Parameters
    ----------
    model_a, model_b : two models of the same architecture (checked: the first differing
        parameter is named) that :func:`permutation_spec` can parse.
    data : for activations: a tensor/array of inputs, an ``(X, y)`` tuple, or an iterable of
        batches (tensors or ``(x, y, ...)`` tuples).
    max_iter, seed : weight matching passes and the seed of its group order.
    batch_size : batch size when ``data`` is a tensor or tuple.

    Returns an :class:`Alignment` (``.model``, ``.perms``, distances before/after).
    """
    if method not in ("weights", "activations"):
        raise ValueError(f"method must be 'weights' or 'activations', got {method!r}.")
    if statistic not in ("inner", "correlation"):
        raise ValueError(f"statistic must be 'inner' or 'correlation', got {statistic!r}.")
    max_iter = check_int(max_iter, "max_iter", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    _check_pair(model_a, model_b)
    pa, pb = _parse(model_a), _parse(model_b)
    if pa.spec.axes != pb.spec.axes or pa.spec.groups != pb.spec.groups:
        raise ValueError("model_a and model_b have the same parameters but their forward passes connect them "
                         f"differently (groups {list(pa.spec.groups)} vs {list(pb.spec.groups)}); pass two models "
                         "of the same architecture.")
    spec = pa.spec
    if method == "weights":
        perms, iters, history = _weight_matching(model_a, model_b, spec, max_iter=max_iter, seed=seed)
    else:
        if data is None:
            raise ValueError("method='activations' needs data: pass inputs (a tensor, an (X, y) tuple or a "
                             "DataLoader) the models can be run on, or use method='weights'.")
        perms = _activation_matching(model_a, model_b, pa, pb, data, statistic=statistic,
                                     batch_size=batch_size, progress=progress)
        iters = 1
    new = copy.deepcopy(model_b)
    _apply_perms(new, spec, perms)
    moved = {g: float(np.mean(p != np.arange(len(p)))) for g, p in perms.items()}
    before, after = weight_distance(model_a, model_b), weight_distance(model_a, new)
    if method == "activations":
        history = [before, after]
    return Alignment(model=new, perms=perms, method=method, distance_before=before, distance_after=after,
                     iterations=iters, history=np.asarray(history, dtype=float), moved=moved)


def _weight_matching(model_a, model_b, spec: PermutationSpec, *, max_iter: int, seed: int):
    pa = {n: p.detach().cpu().double().numpy() for n, p in model_a.named_parameters()}
    pb = {n: p.detach().cpu().double().numpy() for n, p in model_b.named_parameters()}
    touches: dict[str, list[tuple[str, int, Axis]]] = {g: [] for g in spec.groups}
    for name, axes in spec.axes.items():
        if name not in pa:  # buffers are permuted along but not matched
            continue
        for i, ax in enumerate(axes):
            if ax is not None:
                touches[ax.group].append((name, i, ax))
    perms = {g: np.arange(n) for g, n in spec.groups.items()}
    names = [g for g in spec.groups if touches[g]]

    def permuted_b(name: str, skip: int | None = None, override: tuple | None = None) -> np.ndarray:
        w = pb[name]
        for i, ax in enumerate(spec.axes[name]):
            if ax is None or i == skip:
                continue
            p = override[1] if override is not None and ax.group == override[0] else perms[ax.group]
            w = _take_np(w, i, ax, p)
        return w

    def objective(g: str, p: np.ndarray) -> float:
        return float(sum(np.vdot(pa[n], permuted_b(n, override=(g, p))) for n in {t[0] for t in touches[g]}))

    def unit_rows(w: np.ndarray, i: int, ax: Axis, n: int) -> np.ndarray:
        v = w.reshape(w.shape[:i] + (ax.outer, n, ax.inner) + w.shape[i + 1:])
        return np.moveaxis(v, i + 1, 0).reshape(n, -1)

    from scipy.optimize import linear_sum_assignment

    def distance() -> float:
        return math.sqrt(max(0.0, sum(float(np.sum(pa[n] ** 2) + np.sum(pb[n] ** 2)) for n in pa)
                             - 2 * sum(float(np.vdot(pa[n], permuted_b(n) if n in spec.axes else pb[n])) for n in pa)))

    rng = np.random.default_rng(seed)
    history = [distance()]
    it = 0
    for it in range(1, max_iter + 1):
        progress = False
        for gi in rng.permutation(len(names)):
            g = names[gi]
            n = spec.groups[g]
            M = np.zeros((n, n))
            for name, i, ax in touches[g]:
                M += unit_rows(pa[name], i, ax, n) @ unit_rows(permuted_b(name, skip=i), i, ax, n).T
            _, ci = linear_sum_assignment(M, maximize=True)
            if np.array_equal(ci, perms[g]):
                continue
            old, new = objective(g, perms[g]), objective(g, ci)
            if new > old + 1e-12 * max(1.0, abs(old)):
                perms[g] = ci
                progress = True
        history.append(distance())
        if not progress:
            break
    return perms, it, history


class _Recorder(torch.fx.Interpreter):
    def __init__(self, gm, wanted: set[str]):
        super().__init__(gm)
        self.wanted = wanted
        self.store: dict[str, torch.Tensor] = {}

    def run_node(self, n):
        out = super().run_node(n)
        if n.name in self.wanted:
            self.store[n.name] = out
        return out


def _units(t: torch.Tensor, layout: tuple, n: int) -> torch.Tensor:
    """A recorded tensor -> (samples, units) float64."""
    if layout[0] == "flat":
        outer, inner = layout[1], layout[2]
        v = t.reshape(-1, outer, n, inner).permute(0, 1, 3, 2)
    else:
        v = t.movedim(layout[1], -1)
    return v.reshape(-1, n).double()


def _activation_matching(model_a, model_b, pa: _Parsed, pb: _Parsed, data, *, statistic, batch_size, progress):
    from scipy.optimize import linear_sum_assignment

    spec = pa.spec
    reads = pa.reads
    missing = [g for g in spec.groups if not reads.get(g)]
    wanted = {node for g in reads for node, _ in reads[g]}
    acc: dict[tuple, dict[str, Any]] = {}
    dev_a, dtype_a = _device_dtype(model_a)
    dev_b, dtype_b = _device_dtype(model_b)
    show = show_progress(progress)
    with eval_mode(model_a), eval_mode(model_b), torch.no_grad():
        it = _batches(data, batch_size, labels=False)
        if show:
            from tqdm.auto import tqdm
            it = tqdm(it, desc="activations", unit="batch")
        seen = 0
        for x, _ in it:
            ra, rb = _Recorder(pa.gm, wanted), _Recorder(pb.gm, wanted)
            ra.run(_to(x, dev_a, dtype_a))
            rb.run(_to(x, dev_b, dtype_b))
            seen += 1
            for g, points in reads.items():
                n = spec.groups[g]
                for node, layout in points:
                    A = _units(ra.store[node], layout, n).cpu()
                    B = _units(rb.store[node], layout, n).cpu()
                    s = acc.setdefault((g, node, layout), {"ab": torch.zeros(n, n, dtype=torch.float64),
                                                           "a": torch.zeros(n, dtype=torch.float64),
                                                           "b": torch.zeros(n, dtype=torch.float64),
                                                           "aa": torch.zeros(n, dtype=torch.float64),
                                                           "bb": torch.zeros(n, dtype=torch.float64), "m": 0})
                    s["ab"] += A.T @ B
                    s["a"] += A.sum(0)
                    s["b"] += B.sum(0)
                    s["aa"] += (A * A).sum(0)
                    s["bb"] += (B * B).sum(0)
                    s["m"] += A.shape[0]
        if seen == 0:
            raise ValueError("data yielded no batches; pass at least one example.")
    perms = {}
    for g, n in spec.groups.items():
        M = np.zeros((n, n))
        for (gg, _, _), s in acc.items():
            if gg != g:
                continue
            m = s["m"]
            if statistic == "inner":
                M += (s["ab"] / m).numpy()
            else:
                ma, mb = s["a"] / m, s["b"] / m
                cov = s["ab"] / m - torch.outer(ma, mb)
                sa = torch.sqrt(torch.clamp(s["aa"] / m - ma * ma, min=0))
                sb = torch.sqrt(torch.clamp(s["bb"] / m - mb * mb, min=0))
                denom = torch.outer(sa, sb)
                M += torch.where(denom > 0, cov / torch.where(denom > 0, denom, torch.ones_like(denom)),
                                 torch.zeros_like(cov)).numpy()
        if g in missing:
            perms[g] = np.arange(n)
            continue
        _, ci = linear_sum_assignment(M, maximize=True)
        perms[g] = ci.astype(np.int64)
    if missing:
        warn(f"groups {missing} are not read by any layer, so activation matching leaves them unpermuted.")
    return perms


# ======================================================================================
# data helpers
# ======================================================================================


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype | None]:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), None


def _to(x: torch.Tensor, device, dtype) -> torch.Tensor:
    if x.is_floating_point() and dtype is not None:
        return x.to(device=device, dtype=dtype)
    return x.to(device)


def _as_tensor(v: Any, name: str) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    arr = np.asarray(v)
    if arr.dtype == object:
        raise TypeError(f"{name} could not be read as a numeric array; pass a tensor or numpy array.")
    return torch.from_numpy(np.ascontiguousarray(arr))


def _batches(data: Any, batch_size: int, *, labels: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Inputs (and labels) in batches from a tensor/array, an (X, y) tuple or an iterable."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        if labels:
            raise ValueError("labels are needed: pass data as an (X, y) tuple or an iterable of (x, y) batches.")
        X = _as_tensor(data, "data")
        for i in range(0, X.shape[0], batch_size):
            yield X[i:i + batch_size], None
        return
    if isinstance(data, tuple) and len(data) == 2 and not isinstance(data[0], (tuple, list)):
        X, y = _as_tensor(data[0], "X"), _as_tensor(data[1], "y")
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} examples but y has {y.shape[0]}; pass matching arrays.")
        for i in range(0, X.shape[0], batch_size):
            yield X[i:i + batch_size], y[i:i + batch_size]
        return
    if isinstance(data, Mapping) or not hasattr(data, "__iter__"):
        raise TypeError(f"data of type {type(data).__name__} is not supported; pass a tensor/array of inputs, "
                        "an (X, y) tuple, or an iterable (DataLoader) of batches.")
    for batch in data:
        if isinstance(batch, (tuple, list)):
            if not batch:
                raise ValueError("got an empty batch; each batch must be x or an (x, y, ...) tuple.")
            x = _as_tensor(batch[0], "x")
            y = _as_tensor(batch[1], "y") if len(batch) > 1 else None
        else:
            x, y = _as_tensor(batch, "x"), None
        if labels and y is None:
            raise ValueError("labels are needed: each batch must be an (x, y) tuple.")
        yield x, y


# ======================================================================================
# interpolation
# ======================================================================================


@dataclass(frozen=True)
class Barrier(Result):
    """Loss and accuracy along ``theta(alpha) = (1 - alpha) theta_a + alpha theta_b``.

    Attributes
    ----------
    alphas, loss, accuracy : arrays over the path (accuracy is NaN for non-classification
        losses); ``alphas`` always includes 0 and 1.
    loss_barrier : ``max_alpha [L(theta(alpha)) - ((1 - alpha) L(theta_a) + alpha L(theta_b))]``:
        the height above the straight line between the endpoint losses (Entezari et al. 2022;
        the definition the Git Re-Basin comparison uses here).
    loss_barrier_frankle : ``max_alpha L(theta(alpha)) - (L(theta_a) + L(theta_b)) / 2``: the
        height above the endpoints' mean (Frankle et al. 2020, "Linear mode connectivity and
        the lottery ticket hypothesis", who use it on the error).
    error_barrier, error_barrier_frankle : the same two heights for the error ``1 - accuracy``.
    argmax_alpha : where ``loss_barrier`` is attained.
    loss_name, n_examples, bn_recomputed : the loss, examples evaluated, and whether BatchNorm
        running statistics were recomputed for every model on the path.
    """

    alphas: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    loss_barrier: float
    loss_barrier_frankle: float
    error_barrier: float
    error_barrier_frankle: float
    argmax_alpha: float
    loss_name: str
    n_examples: int
    bn_recomputed: bool

    def plot(self, ax=None, *, metric: str = "loss", label: str | None = None, **kwargs):
        """``metric`` (``"loss"``, ``"accuracy"`` or ``"error"``) along alpha, with the straight
        line between the endpoints dashed; returns the axes."""
        values = {"loss": self.loss, "accuracy": self.accuracy, "error": 1.0 - self.accuracy}
        if metric not in values:
            raise ValueError(f"metric must be one of {list(values)}, got {metric!r}.")
        ax = self._axes(ax, (5.0, 3.5))
        v = values[metric]
        line, = ax.plot(self.alphas, v, marker="o", ms=3, label=label, **kwargs)
        ax.plot([0, 1], [v[0], v[-1]], ls="--", lw=0.8, color=line.get_color())
        ax.set_xlabel(r"$\alpha$ ($\theta_a \to \theta_b$)")
        ax.set_ylabel(metric if metric != "loss" else f"loss ({self.loss_name})")
        ax.grid(alpha=0.3)
        if label is not None:
            ax.legend(fontsize=8)
        return ax


_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def _loss_fn(loss: Any) -> tuple[Callable, str]:
    if callable(loss):
        return loss, getattr(loss, "__name__", type(loss).__name__)
    if loss == "cross_entropy":
        return (lambda out, y: F.cross_entropy(out, y, reduction="sum")), "cross_entropy"
    if loss == "mse":
        return (lambda out, y: F.mse_loss(out, y.to(out.dtype).reshape(out.shape), reduction="sum")
                / max(1, out[0].numel())), "mse"
    raise ValueError(f"loss must be 'cross_entropy', 'mse' or a callable (output, target) -> mean loss, got {loss!r}.")


def interpolation_barrier(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Any,
    alphas: Any = None,
    *,
    loss: str | Callable = "cross_entropy",
    batch_size: int = 1024,
    reset_bn: bool | None = None,
    bn_data: Any = None,
    progress: bool | None = None,
) -> Barrier:
    """Loss and accuracy along the straight line between two models' weights, and its barrier.

    ``theta(alpha) = (1 - alpha) theta_a + alpha theta_b`` for every floating-point parameter
    and buffer (integer buffers such as BatchNorm's ``num_batches_tracked`` are taken from
    ``model_a``). The loss barrier is ``max_alpha [L(theta(alpha)) - ((1 - alpha) L(theta_a) +
    alpha L(theta_b))]`` (Entezari et al. 2022; used with Git Re-Basin, Ainsworth, Hayase &
    Srinivasa 2023); Frankle et al.'s (2020) height above the endpoints' mean is reported too,
    both for the loss and for the error.

    Parameters
    ----------
    data : an ``(X, y)`` tuple of arrays/tensors or an iterable (DataLoader) of ``(x, y)``
        batches; every model on the path is evaluated on all of it (eval mode, no gradients).
    alphas : points in [0, 1] (default ``np.linspace(0, 1, 25)``); 0 and 1 are added if absent.
    loss : ``"cross_entropy"`` (mean over examples; accuracy from the arg-max), ``"mse"``, or a
        callable ``(output, target) -> mean loss over the batch`` (accuracy then NaN).
    reset_bn : BatchNorm running statistics of an interpolated model are not the interpolation
        of the endpoints' statistics, and stale statistics inflate the barrier (Jordan et al.
        2023, "REPAIR", study this; their per-unit correction is out of scope here). ``True``
        resets and recomputes them for every model on the path, endpoints included (train-mode
        passes over ``bn_data``, cumulative average: ``momentum=None``); ``False`` keeps the
        interpolated statistics; ``None`` (default) recomputes when the model has BatchNorm
        layers that track running statistics.
    bn_data : inputs for the recomputation (same forms as ``data``; labels unused); default
        ``data``.

    Returns a :class:`Barrier` with ``plot()``.
    """
    _check_pair(model_a, model_b)
    batch_size = check_int(batch_size, "batch_size", 1)
    if alphas is None:
        alphas = np.linspace(0.0, 1.0, 25)
    alphas = np.asarray(alphas, dtype=float).reshape(-1)
    if alphas.size == 0 or not np.all(np.isfinite(alphas)) or alphas.min() < 0 or alphas.max() > 1:
        raise ValueError("alphas must be finite numbers in [0, 1], e.g. np.linspace(0, 1, 25).")
    alphas = np.unique(np.concatenate([alphas, [0.0, 1.0]]))
    fn, loss_name = _loss_fn(loss)
    sd_a = {k: v.detach().clone() for k, v in model_a.state_dict().items()}
    sd_b = {k: v.detach().to(sd_a[k].device) for k, v in model_b.state_dict().items()}
    work = copy.deepcopy(model_a)
    bns = [m for m in work.modules() if isinstance(m, _BN_TYPES) and m.track_running_stats]
    recompute = bool(bns) if reset_bn is None else bool(reset_bn)
    if recompute and not bns:
        warn("reset_bn=True but the model has no BatchNorm layer with running statistics; nothing to recompute.")
        recompute = False
    device, dtype = _device_dtype(work)
    losses, accs = [], []
    n_total = 0
    it = alphas
    if show_progress(progress):
        from tqdm.auto import tqdm
        it = tqdm(alphas, desc="interpolation", unit="alpha")
    for a in it:
        state = {k: ((1.0 - a) * v + a * sd_b[k]) if v.is_floating_point() else v for k, v in sd_a.items()}
        work.load_state_dict(state)
        if recompute:
            _recompute_bn(work, bns, data if bn_data is None else bn_data, batch_size, device, dtype)
        work.eval()
        total, correct, n, classify = 0.0, 0, 0, True
        with torch.no_grad():
            for x, y in _batches(data, batch_size, labels=True):
                out = work(_to(x, device, dtype))
                y = y.to(out.device)
                total += float(fn(out, y)) * (1 if isinstance(loss, str) else out.shape[0])
                if out.ndim == 2 and not y.is_floating_point() and y.ndim == 1:
                    correct += int((out.argmax(1) == y).sum())
                else:
                    classify = False
                n += int(out.shape[0])
        if n == 0:
            raise ValueError("data yielded no examples; pass at least one (x, y) batch.")
        n_total = n
        losses.append(total / n)
        accs.append(correct / n if classify else float("nan"))
    L, acc = np.asarray(losses), np.asarray(accs)
    err = 1.0 - acc
    line_L = (1 - alphas) * L[0] + alphas * L[-1]
    line_E = (1 - alphas) * err[0] + alphas * err[-1]
    k = int(np.argmax(L - line_L))
    return Barrier(
        alphas=alphas, loss=L, accuracy=acc,
        loss_barrier=float(np.max(L - line_L)),
        loss_barrier_frankle=float(np.max(L) - 0.5 * (L[0] + L[-1])),
        error_barrier=float(np.max(err - line_E)) if np.all(np.isfinite(err)) else float("nan"),
        error_barrier_frankle=float(np.max(err) - 0.5 * (err[0] + err[-1])) if np.all(np.isfinite(err)) else float("nan"),
        argmax_alpha=float(alphas[k]), loss_name=loss_name, n_examples=n_total, bn_recomputed=recompute,
    )


def _recompute_bn(model: nn.Module, bns: list, data: Any, batch_size: int, device, dtype) -> None:
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    model.eval()
    for m in bns:
        m.train()
    try:
        with torch.no_grad():
            for x, _ in _batches(data, batch_size, labels=False):
                model(_to(x, device, dtype))
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.eval()


# ======================================================================================
# ReLU rescaling
# ======================================================================================


def _unit_factor(s: np.ndarray, outer: int, inner: int) -> np.ndarray:
    return np.tile(np.repeat(s, inner), outer)


def _scale_axis(t: torch.Tensor, axis: int, outer: int, inner: int, s: np.ndarray, power: int) -> None:
    f = torch.as_tensor(_unit_factor(s, outer, inner) ** power, dtype=t.dtype, device=t.device)
    shape = [1] * t.ndim
    shape[axis] = -1
    t.mul_(f.reshape(shape))


def _apply_scales(model: nn.Module, parsed: _Parsed, scales: Mapping[str, np.ndarray]) -> None:
    named = _named_tensors(model)
    with torch.no_grad():
        for name, s in scales.items():
            seg = parsed.segments[name]
            for p, axis, outer, inner in seg["writers"]:
                _scale_axis(named[p], axis, outer, inner, s, 1)
            for p, axis, outer, inner in seg["readers"]:
                _scale_axis(named[p], axis, outer, inner, s, -1)


def _check_scales(parsed: _Parsed, scales: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(scales, Mapping):
        raise TypeError(f"scales must be a dict scaling-group name -> positive array, got {type(scales).__name__}.")
    spec = parsed.spec
    out = {}
    for name, s in scales.items():
        if name not in spec.scalings:
            if name in spec.not_rescalable:
                raise ValueError(
                    f"cannot rescale the units of {name!r}: {spec.not_rescalable[name]}. The rescaling symmetry "
                    "(f(s x) = s f(x) for s > 0) holds only when every operation between the layer that writes a unit "
                    "and the layers that read it is positively homogeneous: ReLU, LeakyReLU, PReLU, max/average "
                    "pooling, dropout, flatten, and sums of other rescaled units; the rescalable groups of this model "
                    f"are {list(spec.scalings)}.")
            raise ValueError(f"unknown scaling group {name!r}; the model's rescalable groups are {list(spec.scalings)} "
                             "(permutation_spec(model).scalings).")
        arr = np.asarray(s.detach().cpu().numpy() if isinstance(s, torch.Tensor) else s, dtype=np.float64)
        n = spec.scalings[name]
        if arr.shape != (n,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(f"scales[{name!r}] must be {n} finite positive numbers, got shape {arr.shape}"
                             + ("" if arr.shape != (n,) else f" with min {arr.min():.3g}") + ".")
        out[name] = arr
    return out


def rescale_hidden(model: nn.Module, scales: Mapping[str, Any]) -> nn.Module:
    """A copy of ``model`` with hidden units rescaled by positive factors; its function is unchanged.

    For a unit whose values pass only through positively homogeneous operations (ReLU,
    LeakyReLU, PReLU, pooling, dropout, flatten, residual sums) between the layer that writes it
    and the layers that read it, multiplying its incoming weights and bias by ``s > 0`` and its
    outgoing weights by ``1/s`` leaves the network's function unchanged, since ``relu(s z) = s
    relu(z)`` (Neyshabur, Salakhutdinov & Srebro 2015, "Path-SGD"; Dinh et al. 2017). When a
    BatchNorm follows a layer, its affine parameters are the ones scaled (the group is named
    after the BatchNorm). A residual stream is one group: every layer that writes into it is
    scaled by ``s`` and every layer that reads it by ``1/s``.

    Parameters
    ----------
    scales : dict scaling-group name (``permutation_spec(model).scalings``; for plain MLPs the
        layer names, like the permutation groups) -> ``size`` positive numbers.

    Raises ValueError naming the operation (e.g. tanh, GELU, LayerNorm) that breaks the symmetry
    for a group that is asked for.
    """
    parsed = _parse(model)
    checked = _check_scales(parsed, scales)
    new = copy.deepcopy(model)
    _apply_scales(new, parsed, checked)
    return new


def canonical_form(model: nn.Module, *, max_passes: int = 200, tol: float | None = None) -> nn.Module:
    """The representative of ``model``'s ReLU-rescaling orbit whose hidden units all have
    incoming weight vectors (weights and bias, concatenated) of unit Euclidean norm.

    Two networks that differ only by :func:`rescale_hidden` have the same canonical form (to
    float tolerance), so comparing canonical forms removes the positive scaling symmetry of
    ReLU networks (Neyshabur, Salakhutdinov & Srebro 2015; Dinh et al. 2017); the function is
    unchanged. Units are normalised layer by layer in execution order, each scale propagated
    into the next layer's incoming weights. For a unit with an all-zero incoming vector the
    scale is left at 1.

    Residual streams: a stream's "incoming weight vector" for unit i is the concatenation of
    row i of every layer that writes into the stream (the stem and every block's last layer).
    Those rows also read the block's hidden units, which in turn read the stream, so one pass
    does not end at unit norms; the passes are repeated (a fixed-point iteration, each pass
    exactly normalising every group given the others) until the largest correction
    ``|log s|`` falls below ``tol`` (default ``1000 * eps`` of the weights' dtype), with a
    warning if ``max_passes`` passes do not get there. Plain chains converge in one pass.

    Groups that are not rescalable (tanh, GELU, normalisation layers in the way, pinned
    units) are left as they are; a warning names them when the model has no rescalable group.
    """
    max_passes = check_int(max_passes, "max_passes", 1)
    parsed = _parse(model)
    if not parsed.spec.scalings:
        warn("canonical_form: the model has no rescalable hidden units (" + "; ".join(
            f"{k}: {v}" for k, v in parsed.spec.not_rescalable.items()) + "); returning an unchanged copy.")
    new = copy.deepcopy(model)
    named = _named_tensors(new)
    _, dtype = _device_dtype(new)
    if tol is None:
        tol = 1000 * float(torch.finfo(dtype or torch.float32).eps)
    converged = not parsed.spec.scalings
    for _ in range(max_passes):
        worst = 0.0
        for name in parsed.spec.scalings:
            seg = parsed.segments[name]
            n = seg["size"]
            sq = np.zeros(n)
            for p, axis, outer, inner in seg["writers"]:
                t = named[p].detach().double().cpu().numpy()
                v = t.reshape(t.shape[:axis] + (outer, n, inner) + t.shape[axis + 1:])
                sq += (np.moveaxis(v, axis + 1, 0).reshape(n, -1) ** 2).sum(1)
            norm = np.sqrt(sq)
            s = np.where(norm > 0, 1.0 / np.where(norm > 0, norm, 1.0), 1.0)
            worst = max(worst, float(np.max(np.abs(np.log(s)))))
            _apply_scales(new, parsed, {name: s})
        if worst < tol:
            converged = True
            break
    if not converged:
        warn(f"canonical_form: the rescaling passes did not settle within {max_passes} passes (last largest |log s| "
             f"{worst:.2e} > tol {tol:.1e}); the result is normalised only approximately. Raise max_passes.")
    return new
