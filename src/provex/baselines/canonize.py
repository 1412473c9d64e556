"""Prepare any traceable classifier for LRP: merge BatchNorm, split residual sums, refuse the rest.

zennit computes LRP as a modified gradient: every hooked module (convolutions and dense
layers with their rule, activations with the pass rule, average pooling with the LRP-0
"norm" rule) returns the *relevance* of its input as its input gradient. Anything between
hooked modules propagates that relevance by its plain gradient, which conserves the total
only for operations whose every output is a copy or an average of inputs (reshapes,
concatenation, max pooling, ``mean``). A residual ``a + b`` passes the full relevance to
*both* branches, so on torchvision's ``resnet18`` (8 residual additions) the input relevance
summed to about 2^8 times the logit. zennit's own canonizers fix this for models they know
(``SequentialMergeBatchNorm`` for BatchNorm right after a layer in a ``Sequential``,
``ResNetCanonizer`` for torchvision's ResNet blocks).

:func:`prepare` does the same for any model that ``torch.fx`` can trace, from its data flow
instead of its module order:

* BatchNorm whose only input is a convolution / dense layer (used nowhere else) is merged
  into that layer with zennit's ``MergeBatchNorm`` (parameters restored afterwards); other
  BatchNorms, and LayerNorm / GroupNorm / InstanceNorm, pass relevance through unchanged
  (zennit's rule for an unmerged BatchNorm).
* ``a + b`` of two data-dependent tensors becomes zennit's ``Sum`` layer over the stacked
  operands with the LRP-0 ("norm") rule, as zennit's ResNet canonizer does: each operand gets
  its share a / (a + b) of the relevance.
* Element-wise operations with a constant (``x * scale``, ``x + bias``, ``x / 2``), functional
  activations (``F.gelu``, ``torch.sigmoid``, ...) and layer normalisation pass relevance
  through unchanged (an element-wise map has nothing to redistribute); functional sums and
  average pools get the LRP-0 rule.
* A product of two data-dependent tensors where one broadcasts over the other (a
  squeeze-and-excitation gate) gives all relevance to the larger operand, none to the gate
  (the "signal-take-all" rule for multiplicative gates).
* Self-attention (``nn.MultiheadAttention`` with query = key = value, no masks) becomes
  :class:`DetachedAttention`: the attention weights are held constant during the backward
  pass, so the block is linear in its input and the LRP-0 rule conserves relevance up to its
  biases (the "AH" rule of Ali et al., ICML 2022, "XAI for Transformers: better explanations
  through conservative propagation").
* Anything else that touches the data (``matmul``, attention with masks or separate keys,
  functional convolutions, softmax, products of equal-size tensors, unknown leaf modules) is
  refused with an error naming the operation: relevance through it would not be conserved.

Exactly conserving rules (deep Taylor's z+ and z^B, LRP-0 on bias-free layers) then give
sum(relevance) = logit up to relevance dropped where a rule's denominator vanishes; rules that
absorb relevance by design (biases in alpha-beta, the epsilon rule) give less.

When nothing needs rewriting (a plain ``Sequential``, BatchNorm merges only) the model
itself runs; otherwise a rewritten ``GraphModule`` that shares the model's modules runs (a
converted copy: its passes are reported as ``info["model_calls_converted"]``). A module called
at several places gets one copy per extra call site, since a zennit hook holds one input.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["NORM_LAYERS", "DetachedAttention", "LRPModel", "LinearFunction", "canonized", "passthrough", "prepare"]

NORM_LAYERS = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LocalResponseNorm,
)
# modules whose plain gradient conserves relevance (copies, averages, maxima, identities)
_GRADIENT_OK = (
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.ZeroPad1d,
    nn.ZeroPad2d,
    nn.ZeroPad3d,
    nn.ConstantPad1d,
    nn.ConstantPad2d,
    nn.ConstantPad3d,
    nn.ReflectionPad1d,
    nn.ReflectionPad2d,
    nn.ReflectionPad3d,
    nn.ReplicationPad1d,
    nn.ReplicationPad2d,
    nn.ReplicationPad3d,
    nn.Upsample,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.ChannelShuffle,
)
_SELECT_FUNCTIONS = {
    operator.getitem,
    torch.flatten,
    torch.reshape,
    torch.permute,
    torch.transpose,
    torch.squeeze,
    torch.unsqueeze,
    torch.cat,
    torch.concat,
    torch.stack,
    torch.chunk,
    torch.split,
    torch.narrow,
    torch.roll,
    torch.flip,
    torch.mean,
    torch.relu,
    torch.clamp,
    torch.clip,
    torch.max,
    torch.amax,
    torch.movedim,
    F.relu,
    F.relu6,
    F.hardtanh,
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.pad,
    F.interpolate,
}
_SELECT_METHODS = {
    "view",
    "view_as",
    "reshape",
    "reshape_as",
    "flatten",
    "permute",
    "transpose",
    "contiguous",
    "squeeze",
    "unsqueeze",
    "expand",
    "expand_as",
    "repeat",
    "chunk",
    "split",
    "narrow",
    "clone",
    "to",
    "type",
    "float",
    "double",
    "half",
    "bfloat16",
    "mean",
    "flip",
    "roll",
    "unbind",
    "relu",
    "clamp",
    "clip",
    "max",
    "amax",
    "movedim",
    "__getitem__",
}
_META_METHODS = {"size", "dim", "numel", "ndimension", "nelement", "type_as_str"}
_META_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad"}
_ELEMENTWISE_FUNCTIONS = {
    F.gelu,
    F.silu,
    F.mish,
    F.elu,
    F.selu,
    F.celu,
    F.leaky_relu,
    F.softplus,
    F.hardswish,
    F.hardsigmoid,
    F.logsigmoid,
    torch.sigmoid,
    torch.tanh,
    F.sigmoid,
    F.tanh,
    F.layer_norm,
    F.group_norm,
    F.instance_norm,
    F.batch_norm,
    F.local_response_norm,
    F.normalize,
}
_ELEMENTWISE_METHODS = {"sigmoid", "tanh", "exp_", "sigmoid_", "tanh_"}
_ADD = {operator.add, operator.iadd, torch.add}
_MUL = {operator.mul, operator.imul, torch.mul}
_SCALE = {operator.truediv, operator.itruediv, torch.div, operator.sub, operator.isub, torch.sub, operator.neg}
_AVERAGE_FUNCTIONS = {
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
}
_SUM = {torch.sum}


def passthrough(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The value of ``y`` with the gradient (relevance) of ``y`` routed to ``x`` unchanged."""
    return y.detach() + (x - x.detach())


def _gated_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a * b`` where the larger operand takes all relevance and the broadcast gate none."""
    if a.numel() == b.numel():
        raise ValueError(
            "model: LRP cannot split relevance between two equal-size factors of a product "
            f"(shapes {tuple(a.shape)} and {tuple(b.shape)}); use a gradient or perturbation method"
        )
    signal = a if a.numel() > b.numel() else b
    return passthrough(signal, a * b)


def _stack_operands(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The two operands of a residual sum, broadcast and stacked on a new last axis."""
    return torch.stack(torch.broadcast_tensors(a, b), dim=-1)


class LinearFunction(nn.Module):
    """A parameter-free linear function (sum, average pooling) as a module, for the LRP-0 rule."""

    def __init__(self, fn: Any, args: tuple = (), kwargs: dict | None = None) -> None:
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, dict(kwargs or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, *self.args, **self.kwargs)


class DetachedAttention(nn.Module):
    """``nn.MultiheadAttention(x, x, x)`` with the attention weights detached (for LRP-0).

    Computes the same output as the wrapped module from its parameters; gradients (relevance)
    flow through the value path only.
    """

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.mha = mha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mha
        seq = x if m.batch_first else x.transpose(0, 1)  # (N, L, E)
        n, length, embed = seq.shape
        heads, d = m.num_heads, embed // m.num_heads
        q, k, v = F.linear(seq, m.in_proj_weight, m.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, length, heads, d).transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1).detach()
        out = (weights @ v).transpose(1, 2).reshape(n, length, embed)
        out = F.linear(out, m.out_proj.weight, m.out_proj.bias)
        return out if m.batch_first else out.transpose(0, 1)


def _with_no_weights(out: torch.Tensor) -> tuple[torch.Tensor, None]:
    """The ``(output, attention weights)`` pair ``nn.MultiheadAttention`` returns, weights omitted."""
    return out, None


@dataclass
class LRPModel:
    """What :func:`prepare` found: the module to run, BatchNorms to merge, the first layer."""

    module: nn.Module
    converted: bool
    merges: list[tuple[nn.Module, nn.Module]] = field(default_factory=list)
    first_layer: str | None = None
    summary: dict[str, int] = field(default_factory=dict)


def _flat(args: Any) -> Iterator[Any]:
    if isinstance(args, (list, tuple)):
        for a in args:
            yield from _flat(a)
    elif isinstance(args, dict):
        for a in args.values():
            yield from _flat(a)
    else:
        yield args


def _name(target: Any) -> str:
    return getattr(target, "__name__", None) or str(target)


def _refuse(node: fx.Node, what: str) -> ValueError:
    return ValueError(
        f"model: LRP cannot propagate relevance through {what} (graph node {node.name!r}) and keep it "
        "conserved; supported: convolutions, dense layers, BatchNorm, activations, pooling, reshapes, "
        "concatenation, residual additions, broadcast gates and self-attention. Use a gradient or perturbation method "
        "(e.g. 'sensitivity', 'smoothgrad', 'kernel-shap') for this model"
    )


def prepare(model: nn.Module) -> LRPModel:
    """Analyse ``model``'s data flow with ``torch.fx`` and build what LRP needs (see module doc)."""
    from zennit.types import Activation, AvgPool, BatchNorm, MaxPool
    from zennit.types import Linear as AnyLinear

    try:
        graph = fx.Tracer().trace(model)
    except Exception as err:  # any tracing failure: the model cannot be checked
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"model: LRP needs a model torch.fx can trace, to check that relevance is conserved ({first}); "
            "use a gradient or perturbation method for this model"
        ) from None
    gm = fx.GraphModule(model, graph)
    modules = dict(gm.named_modules())
    sites: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            sites[node.target] = sites.get(node.target, 0) + 1
    rw = _Rewriter(gm)
    merges: list[tuple[nn.Module, nn.Module]] = []
    first_layer: str | None = None
    seen_input = False

    for node in list(graph.nodes):
        args = list(_flat((node.args, node.kwargs)))
        data_args = [a for a in args if rw.is_data(a)]
        if node.op == "placeholder":
            rw.kind[node] = "const" if seen_input else "data"
            seen_input = True
            continue
        if node.op == "get_attr":
            rw.kind[node] = "const"
            continue
        if node.op == "output":
            outs = [a for a in args if isinstance(a, fx.Node)]
            if len(outs) != 1 or not rw.is_data(outs[0]):
                raise ValueError("model: LRP needs a model that returns one tensor of logits")
            continue
        meta = (node.op == "call_function" and node.target is getattr and node.args[1] in _META_ATTRS) or (
            node.op == "call_method" and node.target in _META_METHODS
        )
        if meta or not data_args:
            const = node.op == "call_module" or any(isinstance(a, fx.Node) and rw.kind.get(a) == "const" for a in args)
            rw.kind[node] = "meta" if meta or not const else "const"
            continue
        rw.kind[node] = "data"
        if node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, AnyLinear):
                first_layer = first_layer or node.target
            elif isinstance(mod, BatchNorm):
                src = node.args[0]
                if (
                    isinstance(src, fx.Node)
                    and src.op == "call_module"
                    and isinstance(modules[src.target], AnyLinear)
                    and len(src.users) == 1
                    and sites[src.target] == 1
                    and sites[node.target] == 1
                    and mod.affine
                    and mod.running_mean is not None
                ):
                    merges.append((modules[src.target], mod))
                    rw.summary["merged_batchnorms"] += 1
            elif isinstance(mod, nn.MultiheadAttention):
                rw.attention(node, mod)
            elif not isinstance(mod, (Activation, AvgPool, MaxPool, *NORM_LAYERS, *_GRADIENT_OK)):
                raise _refuse(node, f"the module {node.target!r} ({type(mod).__name__})")
        elif node.op == "call_method":
            name = node.target
            if name in _SELECT_METHODS:
                continue
            if name in ("add", "add_"):
                rw.elementwise(node, operator.add, data_args)
            elif name in ("mul", "mul_"):
                rw.elementwise(node, operator.mul, data_args)
            elif name in ("div", "div_", "sub", "sub_", "neg", *_ELEMENTWISE_METHODS):
                rw.elementwise(node, operator.truediv, data_args)
            elif name == "sum":
                rw.linear(node, torch.sum)
            else:
                raise _refuse(node, f"the tensor method .{name}()")
        else:  # call_function
            fn = node.target
            if fn is getattr:
                if node.args[1] not in ("T", "mT"):
                    raise _refuse(node, f"the attribute .{node.args[1]}")
            elif fn in _SELECT_FUNCTIONS or _name(fn) == "stochastic_depth":
                continue
            elif fn in _ADD or fn in _MUL or fn in _SCALE or fn in _ELEMENTWISE_FUNCTIONS:
                rw.elementwise(node, fn, data_args)
            elif fn in _AVERAGE_FUNCTIONS or fn in _SUM:
                rw.linear(node, fn)
            else:
                raise _refuse(node, f"the function {_name(fn)}()")

    # one module per call site: a zennit hook holds the input of one call
    count: dict[str, int] = {}
    for node in list(graph.nodes):
        if node.op != "call_module" or sites.get(node.target, 0) < 2:
            continue
        k = count.get(node.target, 0)
        count[node.target] = k + 1
        if k:
            name = f"{node.target.replace('.', '_')}__site{k}"
            gm.add_submodule(name, copy.deepcopy(modules[node.target]))
            node.target = name
            rw.changed = True
    if rw.changed:
        graph.lint()
        gm.recompile()
    return LRPModel(
        module=gm if rw.changed else model,
        converted=rw.changed,
        merges=merges,
        first_layer=first_layer,
        summary={k: v for k, v in rw.summary.items() if v},
    )


class _Rewriter:
    """Graph rewrites for :func:`prepare`; tracks which nodes carry data."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.kind: dict[fx.Node, str] = {}
        self.changed = False
        self.summary = dict.fromkeys(
            ("merged_batchnorms", "residual_sums", "passed_through", "gates", "linear_functions", "attention_blocks"),
            0,
        )

    def is_data(self, a: Any) -> bool:
        return isinstance(a, fx.Node) and self.kind.get(a) == "data"

    def _replace(self, node: fx.Node, new: fx.Node) -> None:
        node.replace_all_uses_with(new)
        self.gm.graph.erase_node(node)
        self.kind[new] = "data"
        self.changed = True

    def elementwise(self, node: fx.Node, op: Any, data_args: list) -> None:
        """Residual sums -> zennit Sum; products of two data tensors -> gate; the rest -> pass-through."""
        from zennit.layer import Sum

        graph = self.gm.graph
        if len(data_args) >= 2:
            if op in _ADD and len(node.args) >= 2 and not node.kwargs.get("alpha"):
                name = f"_lrp_sum_{node.name}"
                self.gm.add_submodule(name, Sum())
                with graph.inserting_before(node):
                    stacked = graph.call_function(_stack_operands, (node.args[0], node.args[1]))
                    summed = graph.call_module(name, (stacked,))
                self.kind[stacked] = "data"
                self._replace(node, summed)
                self.summary["residual_sums"] += 1
                return
            if op in _MUL and len(node.args) == 2:
                with graph.inserting_before(node):
                    gated = graph.call_function(_gated_product, (node.args[0], node.args[1]))
                self._replace(node, gated)
                self.summary["gates"] += 1
                return
            raise _refuse(node, f"{_name(op)} of two data-dependent tensors")
        with graph.inserting_after(node):
            new = graph.call_function(passthrough, (data_args[0], node))
        node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
        self.kind[new] = "data"
        self.changed = True
        self.summary["passed_through"] += 1

    def attention(self, node: fx.Node, mha: nn.MultiheadAttention) -> None:
        """Self-attention -> :class:`DetachedAttention` (LRP-0 rule), returning (output, None)."""
        names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")
        bound = dict(zip(names, node.args))
        bound.update(node.kwargs)
        masks = [bound.get(k) for k in ("key_padding_mask", "attn_mask")]
        same = bound.get("query") is bound.get("key") is bound.get("value")
        plain = mha._qkv_same_embed_dim and mha.bias_k is None and not mha.add_zero_attn
        if not same or any(m is not None for m in masks) or not plain or bound.get("is_causal"):
            raise _refuse(
                node,
                "attention other than plain self-attention (nn.MultiheadAttention with masks, "
                "separate key/value inputs or extra bias tokens)",
            )
        name = f"_lrp_attention_{node.name}"
        self.gm.add_submodule(name, DetachedAttention(mha))
        graph = self.gm.graph
        with graph.inserting_before(node):
            out = graph.call_module(name, (bound["query"],))
            pair = graph.call_function(_with_no_weights, (out,))
        self.kind[out] = "data"
        self._replace(node, pair)
        self.summary["attention_blocks"] += 1

    def linear(self, node: fx.Node, fn: Any) -> None:
        """A functional sum / average pool -> a :class:`LinearFunction` module (LRP-0 rule)."""
        data, *rest = node.args
        name = f"_lrp_linear_{node.name}"
        self.gm.add_submodule(name, LinearFunction(fn, tuple(rest), node.kwargs))
        with self.gm.graph.inserting_before(node):
            new = self.gm.graph.call_module(name, (data,))
        self._replace(node, new)
        self.summary["linear_functions"] += 1


class _MergeBatchNorm:
    """zennit's ``MergeBatchNorm`` for one (layer, BatchNorm) pair found by data flow, with the
    identity BatchNorm made exact (running variance ``1 - eps``)."""

    def __init__(self) -> None:
        from zennit.canonizers import MergeBatchNorm

        class _Pair(MergeBatchNorm):
            def apply(self, root_module: nn.Module) -> list:  # pairs come from the data flow instead
                return []

        self.inner = _Pair()

    def register(self, linear: nn.Module, bn: nn.Module) -> None:
        self.inner.register([linear], bn)
        bn.running_var.data = torch.full_like(bn.running_var.data, 1.0 - bn.eps)

    def remove(self) -> None:
        self.inner.remove()


@contextmanager
def canonized(prepared: LRPModel) -> Iterator[nn.Module]:
    """Merge the BatchNorms for the duration of the block (parameters restored exactly)."""
    merged: list[_MergeBatchNorm] = []
    try:
        for linear, bn in prepared.merges:
            m = _MergeBatchNorm()
            m.register(linear, bn)
            merged.append(m)
        yield prepared.module
    finally:
        for m in reversed(merged):
            m.remove()
