"""Coupled channel groups of any torch model, found from a torch.fx trace.

Permuting the output channels of a layer leaves the network's function unchanged only if
every tensor that indexes those channels is permuted the same way: the layer's bias, the
normalisation parameters and running statistics after it, the input channels of every
consumer, and everything a residual sum or a concatenation ties to them. A
`ChannelGroup` lists those tensor slices for one permutable set of channels.

How it is found: the model is traced with `torch.fx.symbolic_trace` and run once on the
example inputs to learn every intermediate shape. Each intermediate tensor then carries
the *channel sources* along one tracked dimension: a list of segments, each naming a
source (the out-channels of one conv/linear) and a block size (how many consecutive
positions of the dimension belong to one channel: >1 after a flatten). Layers attach
their parameter slices to the sources they read or create; elementwise sums of tensors
unite sources (union-find). Model inputs carry no sources (never permuted), sources that
reach a model output are fixed, and an op this module does not understand fixes the
sources reaching it, with a warning: a skipped permutation costs smoothness, a wrong one
would change the function.

A tensor with several uses (a module called twice, a weight tied to another layer's, tensors
that alias one memory) moves once for all of them: the uses' channel sources along an axis
are united, and an axis that one use leaves in place (it reads the model input, say) stays in
place for every use.
"""
import math
import operator
import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn


@dataclass(frozen=True)
class ChannelSlice:
    """A range of one parameter or buffer that follows a group's channel order.

    Channel j of the group occupies indices `offset + j*block ... offset + (j+1)*block - 1`
    along `axis`; `length` = channels * block.
    """

    name: str
    axis: int
    offset: int
    length: int
    block: int


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must share one permutation, and every tensor slice indexed by them."""

    channels: int
    slices: tuple[ChannelSlice, ...]


def channel_groups(model: nn.Module, example_inputs: Any) -> list[ChannelGroup]:
    """The permutable channel groups of `model`, in order of first appearance.

    example_inputs: a tensor or a tuple of positional inputs, used once (in eval mode,
    without gradients) to learn the shapes of intermediate tensors.
    """
    graph_module = _trace(model)
    shapes = _record_shapes(model, graph_module, example_inputs)
    return _GroupFinder(model, shapes).run(graph_module.graph)


def permute_channels(model: nn.Module, group: ChannelGroup, order: Sequence[int] | torch.Tensor) -> None:
    """Reorder the group's channels in place: new channel j is old channel `order[j]`."""
    _permute(_named_tensors(model), group, torch.as_tensor(order, dtype=torch.long))


def _permute(tensors: dict[str, torch.Tensor], group: ChannelGroup, order: torch.Tensor) -> None:
    order = order.cpu()
    if order.shape != (group.channels,) or not torch.equal(order.sort().values, torch.arange(group.channels)):
        raise ValueError(f"order must be a permutation of range({group.channels}), got {order.tolist()}")
    with torch.no_grad():
        for piece in group.slices:
            tensor = tensors[piece.name]
            within_block = torch.arange(piece.block)
            index = (order[:, None] * piece.block + within_block).reshape(-1) + piece.offset
            reordered = tensor.index_select(piece.axis, index.to(tensor.device))
            tensor.narrow(piece.axis, piece.offset, piece.length).copy_(reordered)


def _named_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers by name; a tensor shared by several modules appears once."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def _tensor_names(model: nn.Module) -> tuple[dict[int, str], set[str]]:
    """The name each parameter and buffer is permuted under, by id, and the names never to permute.

    Distinct tensor objects that view the same memory the same way (a state dict that aliases
    tensors) get one name, so they move once. Tensors that overlap in memory but view it
    differently (one the transpose of the other, say) cannot move consistently: never permuted.
    """
    names: dict[int, str] = {}
    by_view: dict[tuple, str] = {}
    spans: list[_Span] = []
    for name, tensor in _named_tensors(model).items():
        if tensor.numel() == 0 or tensor.device.type == "meta" or tensor.layout != torch.strided:
            names[id(tensor)] = name  # no memory to share, or none this can compare
            continue
        view = (tensor.device, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
        names[id(tensor)] = by_view.setdefault(view, name)
        extent = 1 + sum((size - 1) * step for size, step in zip(tensor.shape, tensor.stride()))
        start = tensor.data_ptr()
        spans.append(_Span(str(tensor.device), start, start + extent * tensor.element_size(), view, by_view[view]))
    entangled = _overlapping_views(spans)
    if entangled:
        warnings.warn(f"channel groups: {sorted(entangled)} share memory in different layouts; not permuted")
    return names, entangled


class _Span(NamedTuple):
    """The bytes a tensor may touch: [start, end) on `device`."""

    device: str
    start: int
    end: int
    view: tuple
    name: str


def _overlapping_views(spans: list[_Span]) -> set[str]:
    """Names of the spans that overlap a span of another view (sweep over the sorted starts)."""
    clusters: list[list[_Span]] = []
    for span in sorted(spans, key=lambda s: (s.device, s.start)):
        last = clusters[-1] if clusters else None
        if last and span.device == last[0].device and span.start < max(s.end for s in last):
            last.append(span)
        else:
            clusters.append([span])
    return {s.name for cluster in clusters if len({s.view for s in cluster}) > 1 for s in cluster}


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as error:
        raise TypeError(
            f"channel groups need a model torch.fx can trace; tracing {type(model).__name__} failed: {error}"
        ) from error


def _record_shapes(model: nn.Module, graph_module: fx.GraphModule, example_inputs: Any) -> dict[fx.Node, tuple]:
    """Shape of every tensor-valued node for the example inputs (other nodes are absent)."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    shapes: dict[fx.Node, tuple] = {}

    class _ShapeRecorder(fx.Interpreter):
        def run_node(self, node):
            result = super().run_node(node)
            if isinstance(result, torch.Tensor):
                shapes[node] = tuple(result.shape)
            return result

    # eval mode: a shape pass must not update BatchNorm running statistics.
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            _ShapeRecorder(graph_module).run(*example_inputs)
    except Exception as error:
        shapes_given = [tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__ for x in example_inputs]
        raise ValueError(f"example_inputs {shapes_given} do not run through {type(model).__name__}: {error}") from error
    finally:
        for module, training in modes.items():
            module.training = training
    return shapes


@dataclass(frozen=True)
class _ChannelMap:
    """Channel sources along dimension `dim` of a tensor: (source id, block) segments in order."""

    dim: int
    segments: tuple[tuple[int, int], ...]

    def moved(self, dim: int, block_factor: int = 1) -> "_ChannelMap":
        return _ChannelMap(dim, tuple((source, block * block_factor) for source, block in self.segments))


_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.CELU, nn.LeakyReLU, nn.Hardswish, nn.Hardsigmoid,
    nn.Hardtanh, nn.Mish, nn.Softplus, nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d, nn.AlphaDropout, nn.Softmax, nn.LogSoftmax,
)  # fmt: skip
# Softmax is listed because it is permutation-equivariant along any dimension, the channel one included.
_ELEMENTWISE_FUNCTIONS = {
    torch.relu, torch.relu_, F.relu, F.relu6, F.gelu, F.silu, F.elu, F.selu, F.leaky_relu, F.hardswish,
    F.hardsigmoid, F.hardtanh, F.mish, F.softplus, F.sigmoid, torch.sigmoid, F.tanh, torch.tanh, torch.exp,
    torch.abs, torch.neg, operator.neg, torch.clamp, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
    F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub, operator.imul,
    operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum,
}  # fmt: skip
_ELEMENTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "tanh", "exp", "abs", "neg", "clamp", "clamp_", "softmax", "log_softmax",
    "contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to",
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_",
}  # fmt: skip
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_RESHAPE_METHODS = {"flatten", "view", "reshape", "squeeze", "unsqueeze"}
_REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin, torch.std, torch.var}
_REDUCE_METHODS = {"mean", "sum", "amax", "amin", "std", "var"}
_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
# Functional pooling / resizing: acts on the last (number) dims, per leading index.
_SPATIAL_FUNCTIONS = {
    F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3, F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3,
    F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3,
    F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3,
}  # fmt: skip
_SPATIAL_MODULES = (
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._LPPoolNd, nn.Upsample,
)  # fmt: skip
_METADATA_METHODS = {"size", "dim", "numel", "type", "get_device"}
_METADATA_ATTRIBUTES = {"shape", "dtype", "device", "ndim", "is_cuda"}


class _GroupFinder:
    def __init__(self, model: nn.Module, shapes: dict[fx.Node, tuple]):
        self._model = model
        self._shapes = shapes
        self._names, entangled = _tensor_names(model)
        self._parent: list[int] = []
        self._size: list[int] = []
        self._fixed: list[bool] = []
        self._slices: list[tuple[int, ChannelSlice]] = []
        self._frozen: set[str] = set(entangled)  # tensors used outside recognised layers: never permuted
        self._pinned: set[tuple[str, int]] = set()  # (name, axis) some use of the tensor leaves in place
        self._maps: dict[fx.Node, _ChannelMap | None] = {}

    def run(self, graph: fx.Graph) -> list[ChannelGroup]:
        for node in graph.nodes:
            channel_map = self._visit(node)
            if channel_map is not None and not self._covers(node, channel_map):
                self._exclude(f"{_describe(node)} (channel bookkeeping does not match its shape)", [channel_map])
                channel_map = None
            self._maps[node] = channel_map
        return self._groups()

    # ---- sources (union-find) -------------------------------------------------------
    def _new_source(self, size: int, fixed: bool = False) -> int:
        self._parent.append(len(self._parent))
        self._size.append(size)
        self._fixed.append(fixed)
        return len(self._parent) - 1

    def _find(self, source: int) -> int:
        while self._parent[source] != source:
            self._parent[source] = self._parent[self._parent[source]]
            source = self._parent[source]
        return source

    def _union(self, a: int, b: int) -> None:
        a, b = self._find(a), self._find(b)
        if a != b:
            self._parent[b] = a
            self._fixed[a] = self._fixed[a] or self._fixed[b]

    def _fix(self, channel_map: _ChannelMap | None) -> None:
        if channel_map is not None:
            for source, _ in channel_map.segments:
                self._fixed[self._find(source)] = True

    def _exclude(self, what: str, channel_maps: list[_ChannelMap | None]) -> None:
        """Fix the sources reaching an op that cannot be followed, and say so."""
        tracked = [m for m in channel_maps if m is not None]
        if tracked:
            warnings.warn(f"channel groups: {what} is not understood; the channels reaching it are not permuted")
        for channel_map in tracked:
            self._fix(channel_map)

    def _unify(self, a: _ChannelMap, b: _ChannelMap) -> bool:
        """Tie two channel maps position by position; False if their segments do not line up."""
        if len(a.segments) != len(b.segments):
            return False
        for (source_a, block_a), (source_b, block_b) in zip(a.segments, b.segments):
            if block_a != block_b or self._size[source_a] != self._size[source_b]:
                return False
        for (source_a, _), (source_b, _) in zip(a.segments, b.segments):
            self._union(source_a, source_b)
        return True

    def _covers(self, node: fx.Node, channel_map: _ChannelMap) -> bool:
        shape = self._shapes.get(node)
        if shape is None or not 0 <= channel_map.dim < len(shape):
            return False
        return shape[channel_map.dim] == sum(self._size[s] * block for s, block in channel_map.segments)

    # ---- slices ------------------------------------------------------------------------
    def _attach(self, module: nn.Module, attribute: str, axis: int, channel_map: _ChannelMap) -> None:
        """Record that `module.attribute` follows the channels of `channel_map` along `axis`."""
        tensor = getattr(module, attribute, None)
        if not isinstance(tensor, torch.Tensor) or tensor.dim() == 0:
            return
        name = self._names.get(id(tensor))
        if name is None:  # a plain tensor attribute, not a parameter or buffer: cannot be permuted
            self._fix(channel_map)
            return
        offset = 0
        for source, block in channel_map.segments:
            length = self._size[source] * block
            self._slices.append((source, ChannelSlice(name, axis, offset, length, block)))
            offset += length

    def _pin_unattached(self, module: nn.Module, first_slice: int) -> None:
        """Pin every axis of the module's tensors that this call did not attach to channels: if the
        tensor is used elsewhere too (tied, or the module called again), those uses may not move it."""
        attached = {(piece.name, piece.axis) for _, piece in self._slices[first_slice:]}
        for tensor in (*module.parameters(), *module.buffers()):
            name = self._names.get(id(tensor))
            if name is not None:
                self._pinned.update((name, axis) for axis in range(tensor.dim()) if (name, axis) not in attached)

    def _freeze(self, obj: Any) -> None:
        tensors = [obj] if isinstance(obj, torch.Tensor) else []
        if isinstance(obj, nn.Module):
            tensors = list(obj.parameters()) + list(obj.buffers())
        self._frozen.update(self._names[id(t)] for t in tensors if id(t) in self._names)

    def _groups(self) -> list[ChannelGroup]:
        self._tie_shared_slices()
        for source, piece in self._slices:
            if piece.name in self._frozen:
                self._fixed[self._find(source)] = True
            elif (piece.name, piece.axis) in self._pinned and not self._fixed[self._find(source)]:
                warnings.warn(f"channel groups: {piece.name} axis {piece.axis} is shared by uses that permute it "
                              "and uses that keep it in place; not permuted")
                self._fixed[self._find(source)] = True
        members: dict[int, list[ChannelSlice]] = {}
        for source, piece in self._slices:
            root = self._find(source)
            if not self._fixed[root] and piece not in members.setdefault(root, []):
                members[root].append(piece)
        return [ChannelGroup(self._size[root], tuple(pieces)) for root, pieces in members.items()]

    def _tie_shared_slices(self) -> None:
        """A module called twice, or a tensor shared by two modules, gets one order for both uses."""
        by_axis: dict[tuple[str, int], list[tuple[int, ChannelSlice]]] = {}
        for source, piece in self._slices:
            by_axis.setdefault((piece.name, piece.axis), []).append((source, piece))
        for (name, axis), entries in by_axis.items():
            for i, (source_a, a) in enumerate(entries):
                for source_b, b in entries[i + 1 :]:
                    if (a.offset, a.length, a.block) == (b.offset, b.length, b.block):
                        self._union(source_a, source_b)
                    elif a.offset < b.offset + b.length and b.offset < a.offset + a.length:
                        warnings.warn(f"channel groups: {name} axis {axis} is reached by two different channel layouts; not permuted")
                        self._fixed[self._find(source_a)] = True
                        self._fixed[self._find(source_b)] = True

    # ---- nodes -------------------------------------------------------------------------
    def _map(self, arg: Any) -> _ChannelMap | None:
        return self._maps.get(arg) if isinstance(arg, fx.Node) else None

    def _shape(self, arg: Any) -> tuple | None:
        return self._shapes.get(arg) if isinstance(arg, fx.Node) else None

    def _input_maps(self, node: fx.Node) -> list[_ChannelMap | None]:
        found: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), found.append)
        return [self._maps.get(n) for n in found]

    def _visit(self, node: fx.Node) -> _ChannelMap | None:
        if node.op == "placeholder":
            return None
        if node.op == "get_attr":
            self._freeze(operator.attrgetter(node.target)(self._model))
            return None
        if node.op == "output":
            for channel_map in self._input_maps(node):
                self._fix(channel_map)
            return None
        if node.op == "call_module":
            module, first_slice = self._model.get_submodule(node.target), len(self._slices)
            channel_map = self._visit_module(node, module)
            self._pin_unattached(module, first_slice)
            return channel_map
        return self._visit_call(node)

    def _visit_call(self, node: fx.Node) -> _ChannelMap | None:
        target, is_method = node.target, node.op == "call_method"
        if is_method and target in _METADATA_METHODS:
            return None
        if target is getattr and len(node.args) == 2 and node.args[1] in _METADATA_ATTRIBUTES:
            return None
        if (target in _ELEMENTWISE_METHODS) if is_method else (target in _ELEMENTWISE_FUNCTIONS):
            return self._elementwise(node)
        if (target in _RESHAPE_METHODS) if is_method else (target in _RESHAPE_FUNCTIONS):
            return self._reshape(node, node.args[0])
        if (target in _REDUCE_METHODS) if is_method else (target in _REDUCE_FUNCTIONS):
            return self._reduce(node)
        if target in ("transpose", "permute") if is_method else target in (torch.transpose, torch.permute):
            return self._reorder_dims(node)
        if not is_method and target in _CAT_FUNCTIONS:
            return self._cat(node)
        if not is_method and target in _SPATIAL_FUNCTIONS:
            return self._spatial(node, _SPATIAL_FUNCTIONS[target])
        if not is_method and target is F.interpolate:
            return self._spatial(node, len(self._shape(node.args[0])) - 2)
        self._exclude(_describe(node), self._input_maps(node))
        return None

    def _visit_module(self, node: fx.Node, module: nn.Module) -> _ChannelMap | None:
        x = self._map(node.args[0]) if node.args else None
        ndim = len(self._shape(node.args[0]) or ()) if node.args else 0
        if isinstance(module, nn.modules.conv._ConvNd):
            return self._conv(node, module, x, ndim)
        if isinstance(module, nn.Linear):
            return self._linear(node, module, x, ndim)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return self._per_channel(module, x, 1, ("weight", "bias", "running_mean", "running_var"))
        if isinstance(module, nn.modules.instancenorm._InstanceNorm):
            channel_dim = ndim - _spatial_dims(module) - 1
            return self._per_channel(module, x, channel_dim, ("weight", "bias", "running_mean", "running_var"))
        if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            return self._layer_norm(module, x, ndim)
        if isinstance(module, nn.GroupNorm):
            if module.num_groups in (1, module.num_channels):  # statistics unaffected by the order
                return self._per_channel(module, x, 1, ("weight", "bias"))
            self._exclude(f"GroupNorm with {module.num_channels // module.num_groups} channels per group", [x])
            return None
        if isinstance(module, nn.PReLU):
            return x if module.weight.numel() == 1 else self._per_channel(module, x, 1, ("weight",))
        if isinstance(module, _ELEMENTWISE_MODULES):
            return self._elementwise(node)
        if isinstance(module, (nn.Flatten, nn.Unflatten)):
            return self._reshape(node, node.args[0])
        if isinstance(module, _SPATIAL_MODULES):
            spatial = ndim - 2 if isinstance(module, nn.Upsample) else _spatial_dims(module)
            return self._spatial(node, spatial)
        self._freeze(module)
        self._exclude(f"module {node.target} ({type(module).__name__})", self._input_maps(node))
        return None

    # ---- layers ------------------------------------------------------------------------
    def _conv(self, node, conv: nn.modules.conv._ConvNd, x, ndim) -> _ChannelMap | None:
        channel_dim = ndim - len(conv.kernel_size) - 1
        in_axis, out_axis = (0, 1) if conv.transposed else (1, 0)
        if x is not None and x.dim != channel_dim:
            self._exclude(f"{_describe(node)} reading channels tracked on dim {x.dim}", [x])
            x = None
        if conv.groups == 1:
            if x is not None:
                self._attach(conv, "weight", in_axis, x)
            out = _ChannelMap(channel_dim, ((self._new_source(conv.out_channels), 1),))
            self._attach(conv, "weight", out_axis, out)
            self._attach(conv, "bias", 0, out)
            return out
        if conv.groups == conv.in_channels and not conv.transposed:
            # Depthwise: output channels k*c .. k*c+k-1 read only input channel c, so they move with it.
            if x is None:
                return None
            out = x.moved(channel_dim, conv.out_channels // conv.in_channels)
            self._attach(conv, "weight", 0, out)
            self._attach(conv, "bias", 0, out)
            return out
        self._exclude(f"{_describe(node)} with groups={conv.groups}", [x])
        return None

    def _linear(self, node, linear: nn.Linear, x, ndim) -> _ChannelMap | None:
        if x is not None and x.dim != ndim - 1:
            return x  # the tracked channels sit on another dim, which a Linear leaves alone
        if x is not None:
            self._attach(linear, "weight", 1, x)
        out = _ChannelMap(ndim - 1, ((self._new_source(linear.out_features), 1),))
        self._attach(linear, "weight", 0, out)
        self._attach(linear, "bias", 0, out)
        return out

    def _per_channel(self, module, x, channel_dim, attributes) -> _ChannelMap | None:
        """Layers with one parameter per channel along `channel_dim` and statistics that do not mix channels."""
        if x is not None and x.dim == channel_dim:
            for attribute in attributes:
                self._attach(module, attribute, 0, x)
        return x  # on any other dim the layer acts elementwise or through order-free statistics

    def _layer_norm(self, norm, x, ndim) -> _ChannelMap | None:
        first_normalised = ndim - len(norm.normalized_shape)
        if x is not None and x.dim >= first_normalised:
            for attribute in ("weight", "bias"):
                self._attach(norm, attribute, x.dim - first_normalised, x)
        return x

    # ---- tensor ops ----------------------------------------------------------------------
    def _elementwise(self, node: fx.Node) -> _ChannelMap | None:
        """Pointwise ops with broadcasting: all operands' channels must line up."""
        if node not in self._shapes:  # arithmetic on sizes or other non-tensors
            self._exclude(_describe(node), self._input_maps(node))
            return None
        out_ndim = len(self._shapes[node])
        operands: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), operands.append)
        operands = [n for n in operands if n in self._shapes]
        tracked = [(self._maps[n], out_ndim - len(self._shapes[n])) for n in operands if self._maps[n] is not None]
        if not tracked:
            return None
        dims = {m.dim + shift for m, shift in tracked}
        if len(dims) > 1:
            self._exclude(f"{_describe(node)} on channels tracked on different dims", [m for m, _ in tracked])
            return None
        dim = dims.pop()
        result = tracked[0][0].moved(dim)
        for channel_map, _ in tracked[1:]:
            if not self._unify(result, channel_map):
                self._exclude(f"{_describe(node)} on differently concatenated channels", [m for m, _ in tracked])
                return None
        for operand in operands:
            shape = self._shapes[operand]
            position = dim - (out_ndim - len(shape))
            if self._maps[operand] is None and position >= 0 and shape[position] != 1:
                self._fix(result)  # combined with a tensor whose channels stay in place
        return result

    def _reshape(self, node: fx.Node, source: fx.Node) -> _ChannelMap | None:
        """Follow the channel dim through a reshape when each channel stays one contiguous block."""
        x = self._map(source)
        if x is None:
            return None
        in_shape, out_shape = self._shapes[source], self._shapes[node]
        outer = math.prod(in_shape[: x.dim])
        channel_length = in_shape[x.dim]
        for dim in range(len(out_shape)):
            if math.prod(out_shape[:dim]) == outer and out_shape[dim] % channel_length == 0:
                return x.moved(dim, out_shape[dim] // channel_length)
            if math.prod(out_shape[:dim]) > outer:
                break
        self._exclude(f"{_describe(node)} from {list(in_shape)} to {list(out_shape)} splitting channels", [x])
        return None

    def _reduce(self, node: fx.Node) -> _ChannelMap | None:
        x = self._map(node.args[0])
        if x is None:
            return None
        ndim = len(self._shapes[node.args[0]])
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if dims is None or (isinstance(dims, (list, tuple)) and not dims):
            return None  # reduced to a scalar: independent of the channel order
        dims = {d % ndim for d in (dims if isinstance(dims, (list, tuple)) else (dims,))}
        if x.dim in dims:
            return None  # a sum over the channels does not depend on their order
        keepdim = len(self._shapes[node]) == ndim  # read from the shapes: std/var take other positional args
        return x.moved(x.dim if keepdim else x.dim - sum(d < x.dim for d in dims))

    def _reorder_dims(self, node: fx.Node) -> _ChannelMap | None:
        x = self._map(node.args[0])
        if x is None:
            return None
        ndim = len(self._shapes[node.args[0]])
        dims = list(node.args[1:]) or [node.kwargs[k] for k in ("dims", "dim0", "dim1") if k in node.kwargs]
        if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = list(dims[0])
        dims = [d % ndim for d in dims]
        if node.target in ("permute", torch.permute):
            return x.moved(dims.index(x.dim))
        swap = {dims[0]: dims[1], dims[1]: dims[0]}
        return x.moved(swap.get(x.dim, x.dim))

    def _cat(self, node: fx.Node) -> _ChannelMap | None:
        tensors = list(node.args[0])
        ndim = len(self._shapes[node])
        cat_dim = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % ndim
        maps = [self._maps.get(t) for t in tensors]
        tracked_dims = {m.dim for m in maps if m is not None}
        if not tracked_dims:
            return None
        if len(tracked_dims) > 1:
            self._exclude(f"{_describe(node)} of channels tracked on different dims", maps)
            return None
        if tracked_dims == {cat_dim}:
            segments: list[tuple[int, int]] = []
            for tensor, channel_map in zip(tensors, maps):
                if channel_map is None:  # an untracked piece keeps its place: a fixed segment
                    channel_map = _ChannelMap(cat_dim, ((self._new_source(self._shapes[tensor][cat_dim], True), 1),))
                segments.extend(channel_map.segments)
            return _ChannelMap(cat_dim, tuple(segments))
        return self._elementwise(node)  # joined along another dim: the channels must line up

    def _spatial(self, node: fx.Node, spatial_dims: int) -> _ChannelMap | None:
        """Pooling / resizing over the last `spatial_dims` dims, independently per channel."""
        x = self._map(node.args[0])
        if x is not None and x.dim >= len(self._shapes[node.args[0]]) - spatial_dims:
            self._exclude(f"{_describe(node)} over the tracked channel dim", [x])
            return None
        return x


def _spatial_dims(module: nn.Module) -> int:
    match = re.search(r"([123])d$", type(module).__name__)
    if match is None:
        raise TypeError(f"cannot tell the spatial dims of {type(module).__name__}")
    return int(match.group(1))


def _describe(node: fx.Node) -> str:
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_module":
        return f"module {node.target}"
    target: Callable = node.target
    return f"{getattr(target, '__module__', None) or ''}.{getattr(target, '__name__', repr(target))}".lstrip(".")
