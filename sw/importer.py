"""Model import: trace any ``torch.nn.Module`` (torch.fx) into a float layer list (a graph in run order).

Supported: Conv2d (any kernel, stride and zero padding, per axis; groups=1 or depthwise, dilation=1), Linear, ReLU,
ReLU6 and Hardtanh(0, max) (ReLU with a cap), MaxPool2d, AvgPool2d (no padding; a window that does not tile the map
drops the rows / columns past the last whole window, as PyTorch does), AdaptiveAvgPool2d (output sizes that divide
the map, e.g. 1), Flatten, BatchNorm2d / BatchNorm1d (folded into the preceding Conv2d / Linear), Dropout /
Identity (nothing in eval), the residual add of two tensors of one shape (``x + y``, ``torch.add``), plus
``torch.flatten`` / ``F.relu`` / ``torch.relu`` / ``F.avg_pool2d`` / ``F.adaptive_avg_pool2d`` / the global
``x.mean((2, 3))`` calls. ReLU is fused into the preceding Conv2d / Linear / add. Anything else is refused with one
error naming the module and the supported set.

**Graphs**: a layer that does not read the layer before it (a ResNet's 1x1 shortcut conv reads the block's input)
names what it reads in ``inputs``; an add reads two tensors. A fused ReLU / folded BatchNorm must be the only
reader of its layer's output (else the other reader would see the unfused value: refused).

**Depthwise Conv2d** (groups = in_channels, out_channels = m * in_channels, depth multiplier m >= 1) is imported
as the regular conv it equals: an N x (C*kh*kw) weight matrix that is zero outside each output channel's own
kh x kw block (output channel ``o`` reads input channel ``o // m``), recorded with ``groups`` = C. The golden
model, the ROMs and the RTL then need no new operator (each scheme stores the zeros as it stores any zero).
Other group counts (1 < groups < in_channels) are refused.

**Non-square** kernels, strides and paddings are kept per axis: ``stride`` / ``padding`` are one int when both
axes agree, else (rows, columns) — e.g. DS-CNN's 10x4 kernel, stride 2, padding (5, 1).

The input is a (C, H, W) image or an F-vector: a model that takes N×F tensors is imported with input shape
``(F,)``; its layer chain sees a (F, 1, 1) tensor (a Linear is a 1x1 conv over it).

**ReLU6 / Hardtanh(0, max)**: the cap needs nothing in the integer model. The output scale of the layer is
calibrated on the capped outputs, so its largest int8 code (127) stands for at most ``max``: the int8 clamp
[0, 127] the integer model applies after every ReLU layer *is* the cap, as for a plain ReLU (the float model
used for calibration and for the check against the module applies ``min(x, max)``). A Hardtanh with a
nonzero lower bound (e.g. the default [-1, 1]) would need a clamp at other codes than the int8 range's ends in
the golden model and the requantizer: refused.
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from .errors import SparsynError
from .qmodel import MODEL_INPUT, axis_pair, axis_pair_or_int

SUPPORTED = ("Conv2d (groups=1, or depthwise: groups = in_channels), Linear, ReLU, ReLU6, Hardtanh(0, max), "
             "MaxPool2d, AvgPool2d (no padding), AdaptiveAvgPool2d(1), Flatten, BatchNorm2d (after a Conv2d), "
             "BatchNorm1d (after a Linear), Dropout, Identity, and the residual add of two tensors")


@dataclass
class FloatLayer:
    """One layer of the imported float network (weights as an N x K matrix for conv/linear)."""
    name: str
    kind: str                      # conv | linear | maxpool | avgpool | add | flatten
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    weight: np.ndarray | None = None   # N x K float64
    bias: np.ndarray | None = None     # N
    kernel: tuple[int, int] = (1, 1)
    stride: int | tuple[int, int] = 1     # one int, or (rows, columns) when they differ
    padding: int | tuple[int, int] = 0
    relu: bool = False
    pool: tuple[int, int, int] | None = None  # maxpool (kernel, stride, padding)
    act_max: float | None = None       # ReLU6 / Hardtanh(0, max): the cap of the fused ReLU (float model only)
    groups: int = 1                    # a depthwise conv's groups (= input channels); its weight is block-diagonal
    inputs: tuple[str, ...] = ()       # the tensors it reads (layer names / MODEL_INPUT); () = the layer before it


def load_model_file(path) -> nn.Module:
    """A module saved with ``torch.save(module, path)`` (or a TorchScript-free pickle of one)."""
    path = Path(path)
    if not path.exists():
        raise SparsynError(f"model file {path} not found; pass a file saved with torch.save(model, PATH) "
                           "or --model default")
    if path.is_dir():
        raise SparsynError(f"model file {path} is a folder; pass the file saved with torch.save(model, PATH)")
    try:
        obj = torch.load(path, weights_only=False, map_location="cpu")
    except ModuleNotFoundError as err:
        raise SparsynError(f"model file {path} needs the Python module {err.name!r} to load (torch.save(model) "
                           f"stores the model's class by reference): make {err.name!r} importable — run sparsyn "
                           "from the folder that holds it or pip install it") from None
    except AttributeError as err:
        raise SparsynError(f"model file {path} refers to a class that its module no longer defines ({err}); load it "
                           "with the code it was saved with") from None
    except Exception as err:  # torch raises many types for corrupt files
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise SparsynError(f"model file {path} could not be loaded ({type(err).__name__}{': ' + first if first else ''}); "
                           "save the whole module with torch.save(model, PATH)") from None
    if isinstance(obj, dict):
        raise SparsynError(f"model file {path} holds a state_dict, not a module; "
                           "save the module itself with torch.save(model, PATH)")
    if not isinstance(obj, nn.Module):
        raise SparsynError(f"model file {path} holds a {type(obj).__name__}, not a torch.nn.Module; "
                           "save the module itself with torch.save(model, PATH)")
    return obj


def block_diagonal(wt: np.ndarray, channels: int) -> np.ndarray:
    """A depthwise conv's N x (kh*kw) weights (PyTorch's (N, 1, kh, kw) flattened; N = m * ``channels``) as the
    N x (channels*kh*kw) matrix of the equivalent regular conv: output channel o keeps its kh*kw weights at input
    channel o // m's columns, zeros elsewhere."""
    n, area = wt.shape
    if n % channels:
        raise ValueError(f"{n} output channels are not a multiple of {channels} groups")
    full = np.zeros((n, channels * area), dtype=wt.dtype)
    for o in range(n):
        c = o // (n // channels)
        full[o, c * area:(c + 1) * area] = wt[o]
    return full


def _int_param(v, what, name):
    t = (v, v) if isinstance(v, int) else tuple(v)
    if t[0] != t[1]:
        raise SparsynError(f"layer '{name}' has non-square {what} {t}; sparsyn supports equal {what} in both "
                           f"dimensions")
    return int(t[0])


def import_model(module: nn.Module, input_shape: tuple[int, ...]) -> list[FloatLayer]:
    """Trace ``module`` and return its layers, in the order they run, with shapes for a (C, H, W) input, or an
    (F,) input (the module is called with N×F tensors; the layers see (F, 1, 1)).

    The model may branch: a layer whose input is not the layer before it names its inputs (``inputs``; the model's
    input is :data:`~sparsyn.sw.qmodel.MODEL_INPUT`), and a residual add reads two. The model's output is the
    last layer's."""
    module = module.eval()
    try:
        gm = fx.symbolic_trace(module)
    except Exception as err:
        raise SparsynError(f"model {type(module).__name__} cannot be traced by torch.fx ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''}); use a plain feed-forward "
                           f"model of: {SUPPORTED}") from None
    mods = dict(gm.named_modules())
    layers: list[FloatLayer] = []
    input_shape = tuple(int(v) for v in input_shape)
    shape_of: dict[str, tuple] = {}    # tensor (layer name or MODEL_INPUT) -> its (C, H, W)
    tensor: dict[str, str] = {}        # fx node -> the tensor holding its value
    node_of: dict[str, fx.Node] = {}   # tensor -> the fx node that last defined it (its users read it)

    def unsupported(what):
        raise SparsynError(f"unsupported layer {what}; sparsyn supports {SUPPORTED}")

    # every problem of the model is reported at once: after a refused layer the walk goes on with the shape
    # PyTorch computes for it (when the model runs on a zero input at all)
    shapes = _propagated_shapes(gm, input_shape)
    problems: list[str] = []
    refused: set[str] = set()          # refused nodes, and the BatchNorm / ReLU / Dropout that only follow them
    output = None
    for node in gm.graph.nodes:
        if node.op == "output":
            output = node
            break
        try:
            if node.op == "placeholder":
                if MODEL_INPUT in shape_of:
                    unsupported(f"second model input '{node.name}'")
                tensor[node.name], node_of[MODEL_INPUT] = MODEL_INPUT, node
                shape_of[MODEL_INPUT] = input_shape + (1, 1) if len(input_shape) == 1 else input_shape
                continue
            if node.op == "get_attr":
                unsupported(f"parameter access '{node.target}' in forward()")
            args = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]
            if any(a.name in refused for a in args) and node.name in shapes and (len(args) > 1 or _follows(node, mods)):
                # the BatchNorm / activation of a refused layer, or an add of one: no problem of its own
                refused.add(node.name)
                tensor[node.name], shape_of[node.name] = node.name, shapes[node.name]
                continue
            label = str(node.target) if node.op == "call_module" else node.name
            if len(args) == 2 and node.target in _ADDS:
                out = _add_layer(node.name, [tensor[a.name] for a in args], shape_of)
            elif len(args) != 1:
                unsupported(f"'{label}': an operation on {len(args)} tensors (only a residual add of two tensors "
                            "reads more than one)")
            else:
                src = tensor[args[0].name]
                if _follows(node, mods) and src != MODEL_INPUT:
                    # fused into / folded into the layer that made its input: nobody else may read that value
                    others = [u.name for u in args[0].users if u is not node]
                    if others and not _ignored(node, mods):
                        unsupported(f"'{label}': it changes the output of '{src}', which '{others[0]}' also reads "
                                    "(a fused BatchNorm / ReLU must be the only reader of its layer's output)")
                shape = shape_of[src]
                owner = next((l for l in layers if l.name == src), None)
                if node.op == "call_module":
                    out = _module_layer(mods[node.target], str(node.target), shape, owner)
                elif node.op in ("call_function", "call_method"):
                    out = _function_layer(node, shape, owner)
                else:
                    unsupported(f"'{node.name}' ({node.op})")
                if out is None:                 # fused, folded or ignored: the node's value is its input's
                    tensor[node.name] = src
                    node_of[src] = node
                    continue
                out.inputs = (src,)
        except SparsynError as err:
            problems.append(str(err))
            refused.add(node.name)
            if shapes.get(node.name) is None:
                break                      # no shape to go on with
            tensor[node.name], shape_of[node.name] = node.name, shapes[node.name]   # a stand-in for its readers
            continue
        layers.append(out)
        tensor[node.name], shape_of[out.name], node_of[out.name] = out.name, out.out_shape, node
    if problems:
        raise SparsynError(_problems_text(type(module).__name__, problems))
    if not any(l.kind in ("conv", "linear") for l in layers):
        raise SparsynError(f"model {type(module).__name__} has no Conv2d or Linear layer to compress")
    result = output.args[0] if output is not None else None
    if not isinstance(result, fx.Node) or tensor.get(result.name) != layers[-1].name:
        raise SparsynError(f"model {type(module).__name__} does not return the output of its last layer "
                           f"('{layers[-1].name}'); return one tensor, computed last")
    _chain_inputs(layers)
    _check_with_torch(module, layers, input_shape)
    return layers


def _chain_inputs(layers: list[FloatLayer]) -> None:
    """Drop ``inputs`` that just name the layer before (the model input for the first): a chain stays a chain."""
    for i, layer in enumerate(layers):
        if layer.inputs == ((layers[i - 1].name,) if i else (MODEL_INPUT,)):
            layer.inputs = ()


def _add_layer(name, srcs, shape_of):
    a, b = srcs
    if shape_of[a] != shape_of[b]:
        raise SparsynError(f"unsupported layer '{name}': an add of a {shape_of[a]} and a {shape_of[b]} tensor; "
                           "the residual add needs two tensors of one shape (no broadcasting)")
    return FloatLayer(name, "add", shape_of[a], shape_of[a], inputs=(a, b))


#: The operators of a residual add (``x + y``, ``torch.add``, ``x.add(y)``).
_ADDS = (operator.add, operator.iadd, torch.add, "add", "add_")


def _ignored(node, mods) -> bool:
    """Dropout / Identity: nothing in eval."""
    return node.op == "call_module" and isinstance(mods[node.target], (nn.Dropout, nn.Identity))


def _follows(node, mods) -> bool:
    """A node that only post-processes the layer before it (folded / fused / ignored): BatchNorm, ReLU,
    ReLU6 / Hardtanh, Dropout, Identity, or a relu call."""
    if node.op == "call_module":
        return isinstance(mods[node.target], (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.Hardtanh, nn.Dropout,
                                              nn.Identity))
    return node.target in (F.relu, torch.relu, "relu")


def _propagated_shapes(gm, input_shape) -> dict:
    """node name -> its output as (C, H, W) ((K, 1, 1) for a vector) from PyTorch's shape propagation on a zero
    input; empty when the model does not run on it."""
    import contextlib
    import io

    from torch.fx.passes.shape_prop import ShapeProp
    if sum(node.op == "placeholder" for node in gm.graph.nodes) != 1:
        return {}
    try:
        with contextlib.redirect_stderr(io.StringIO()):       # ShapeProp prints the trace of a failing node
            ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
    except Exception:
        return {}
    out = {}
    for node in gm.graph.nodes:
        meta = node.meta.get("tensor_meta")
        shape = tuple(getattr(meta, "shape", ()) or ())
        if len(shape) == 4:
            out[node.name] = tuple(int(v) for v in shape[1:])
        elif len(shape) == 2:
            out[node.name] = (int(shape[1]), 1, 1)
    return out


def _problems_text(model: str, problems: list[str]) -> str:
    """One line for every problem found: each without the repeated list of what is supported, then that list."""
    tail = f"; sparsyn supports {SUPPORTED}"
    if len(problems) == 1:
        return problems[0]
    items = [p[:-len(tail)] if p.endswith(tail) else p for p in problems]
    return f"model {model} has {len(problems)} problems: " + " | ".join(items) + tail


def _conv_out(h, k, s, p):
    return (h + 2 * p - k) // s + 1


def _module_layer(m, name, in_shape, owner):
    c, h, w = in_shape
    if isinstance(m, nn.Conv2d):
        if m.groups not in (1, m.in_channels):
            # (only groups = in_channels, depthwise, is a block-diagonal matrix of one input channel per block)
            raise SparsynError(f"unsupported layer '{name}': grouped Conv2d (groups={m.groups}); "
                               f"sparsyn supports {SUPPORTED}")
        if tuple(m.dilation) != (1, 1):
            raise SparsynError(f"unsupported layer '{name}': dilated Conv2d (dilation={tuple(m.dilation)}); "
                               f"sparsyn supports {SUPPORTED}")
        if isinstance(m.padding, str) or m.padding_mode != "zeros":
            raise SparsynError(f"unsupported layer '{name}': Conv2d padding {m.padding!r}/{m.padding_mode}; "
                               "use integer zero padding")
        if m.in_channels != c:
            raise SparsynError(f"layer '{name}' expects {m.in_channels} input channels but gets {c}; "
                               "check the model's input shape")
        kh, kw = m.kernel_size
        (sh, sw), (ph, pw) = axis_pair(m.stride), axis_pair(m.padding)
        ho, wo = _conv_out(h, kh, sh, ph), _conv_out(w, kw, sw, pw)
        if ho < 1 or wo < 1:
            raise SparsynError(f"layer '{name}': a {kh}x{kw} kernel does not fit a {h}x{w} input")
        wt = m.weight.detach().double().reshape(m.out_channels, -1).numpy().copy()
        if m.groups > 1:
            wt = block_diagonal(wt, m.in_channels)
        b = (m.bias.detach().double().numpy().copy() if m.bias is not None else np.zeros(m.out_channels))
        return FloatLayer(name, "conv", in_shape, (m.out_channels, ho, wo), wt, b, (kh, kw),
                          axis_pair_or_int((sh, sw)), axis_pair_or_int((ph, pw)), groups=m.groups)
    if isinstance(m, nn.Linear):
        k = c * h * w
        if (h, w) != (1, 1):
            raise SparsynError(f"layer '{name}': Linear needs a flattened input but gets shape {in_shape}; "
                               "add nn.Flatten() before it")
        if m.in_features != k:
            raise SparsynError(f"layer '{name}' expects {m.in_features} inputs but gets {k}")
        wt = m.weight.detach().double().numpy().copy()
        b = (m.bias.detach().double().numpy().copy() if m.bias is not None else np.zeros(m.out_features))
        return FloatLayer(name, "linear", in_shape, (m.out_features, 1, 1), wt, b)
    if isinstance(m, nn.ReLU):
        return _fuse_relu(name, owner)
    if isinstance(m, (nn.ReLU6, nn.Hardtanh)):        # nn.ReLU6 is a Hardtanh(0, 6)
        lo, hi = float(m.min_val), float(m.max_val)
        if lo != 0.0 or hi <= 0.0:
            raise SparsynError(f"unsupported layer '{name}': Hardtanh({lo:g}, {hi:g}); only a cap above zero, "
                               "Hardtanh(0, max) or ReLU6, is a clamp of the int8 codes; use ReLU6 or "
                               "Hardtanh(0, max)")
        _fuse_relu(name, owner, cap=hi)
        return None
    if isinstance(m, nn.MaxPool2d):
        k = _int_param(m.kernel_size, "kernel_size", name)
        s = _int_param(m.stride if m.stride is not None else m.kernel_size, "stride", name)
        p = _int_param(m.padding, "padding", name)
        if _int_param(m.dilation, "dilation", name) != 1 or m.ceil_mode or m.return_indices:
            raise SparsynError(f"unsupported layer '{name}': MaxPool2d with dilation/ceil_mode/return_indices")
        ho, wo = _conv_out(h, k, s, p), _conv_out(w, k, s, p)
        return FloatLayer(name, "maxpool", in_shape, (c, ho, wo), pool=(k, s, p))
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode or m.divisor_override is not None or axis_pair(m.padding) != (0, 0):
            raise SparsynError(f"unsupported layer '{name}': AvgPool2d with padding, ceil_mode or divisor_override; "
                               "use AvgPool2d(kernel_size, stride) without padding")
        kernel = axis_pair(m.kernel_size)
        return _avgpool(name, in_shape, kernel, axis_pair(m.stride if m.stride is not None else m.kernel_size))
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return _adaptive_avgpool(name, in_shape, m.output_size)
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1:
            raise SparsynError(f"unsupported layer '{name}': Flatten(start_dim={m.start_dim}); use nn.Flatten()")
        return FloatLayer(name, "flatten", in_shape, (c * h * w, 1, 1))
    if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        return _fold_bn(m, name, owner)
    if isinstance(m, (nn.Dropout, nn.Identity)):
        return None
    raise SparsynError(f"unsupported layer '{name}' ({type(m).__name__}); sparsyn supports {SUPPORTED}")


def _function_layer(node, in_shape, owner):
    t = node.target
    if t in (F.relu, torch.relu, "relu") or (node.op == "call_method" and t == "relu"):
        return _fuse_relu(node.name, owner)
    if t is F.adaptive_avg_pool2d:
        return _adaptive_avgpool(node.name, in_shape, _arg(node, 1, "output_size"))
    if t is F.avg_pool2d:
        kernel = _arg(node, 1, "kernel_size")
        stride = _arg(node, 2, "stride", None) or kernel
        if _arg(node, 3, "padding", 0) not in (0, (0, 0)) or _arg(node, 4, "ceil_mode", False):
            raise SparsynError(f"unsupported operation '{node.name}': avg_pool2d with padding or ceil_mode; "
                               "use avg_pool2d(x, kernel_size, stride) without padding")
        return _avgpool(node.name, in_shape, axis_pair(kernel), axis_pair(stride))
    if t in (torch.mean, "mean"):
        dims = _arg(node, 1, "dim", None)
        dims = tuple(sorted(int(d) % 4 for d in (dims if isinstance(dims, (tuple, list)) else [dims]))) \
            if dims is not None else None
        if dims == (2, 3) and not _arg(node, 2, "keepdim", False):
            c, h, w = in_shape
            layer = _avgpool(node.name, in_shape, (h, w), (h, w))
            return layer                      # (C, 1, 1): the flattened (N, C) it returns is the same buffer
        raise SparsynError(f"unsupported operation '{node.name}': mean over dims {dims}; only the global mean "
                           "over (H, W), x.mean((2, 3)), is an average pool")
    if t in (torch.flatten, "flatten", "view", "reshape") and node.op in ("call_function", "call_method"):
        c, h, w = in_shape
        return FloatLayer(node.name, "flatten", in_shape, (c * h * w, 1, 1))
    what = getattr(t, "__name__", str(t))
    raise SparsynError(f"unsupported operation '{node.name}' ({what}); sparsyn supports {SUPPORTED}")


def _arg(node, index: int, key: str, default=...):
    """Argument ``index`` / keyword ``key`` of an fx call (a constant; ``default`` when absent)."""
    if len(node.args) > index:
        return node.args[index]
    if key in node.kwargs:
        return node.kwargs[key]
    if default is ...:
        raise SparsynError(f"operation '{node.name}' has no {key} argument")
    return default


def _avgpool(name, in_shape, kernel, stride):
    c, h, w = in_shape
    (kh, kw), (sh, sw) = kernel, stride
    if kh > h or kw > w:
        raise SparsynError(f"layer '{name}': a {kh}x{kw} average-pool window does not fit a {h}x{w} input")
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    return FloatLayer(name, "avgpool", in_shape, (c, ho, wo), kernel=(kh, kw), stride=axis_pair_or_int((sh, sw)))


def _adaptive_avgpool(name, in_shape, size):
    c, h, w = in_shape
    oh, ow = axis_pair(size) if size is not None else (1, 1)
    oh, ow = oh or h, ow or w
    if h % oh or w % ow:
        raise SparsynError(f"unsupported layer '{name}': AdaptiveAvgPool2d({size}) over a {h}x{w} map has windows of "
                           "different sizes; use AdaptiveAvgPool2d(1) or an output size that divides the map")
    return _avgpool(name, in_shape, (h // oh, w // ow), (h // oh, w // ow))


def _fuse_relu(name, prev, cap: float | None = None):
    if prev is None or prev.kind not in ("conv", "linear", "add"):
        raise SparsynError(f"{'ReLU' if cap is None else 'ReLU6 / Hardtanh'} '{name}' must directly follow a Conv2d, "
                           "Linear or residual add (it is fused into it)")
    if prev.relu:
        # a second cap keeps the smaller one; a plain ReLU after a capped one changes nothing
        cap = cap if prev.act_max is None else (prev.act_max if cap is None else min(cap, prev.act_max))
    prev.relu = True
    prev.act_max = cap
    return None


def _fold_bn(bn, name, prev):
    kind, after = ("conv", "Conv2d") if isinstance(bn, nn.BatchNorm2d) else ("linear", "Linear")
    if prev is None or prev.kind != kind or prev.relu:
        raise SparsynError(f"{type(bn).__name__} '{name}' must directly follow a {after} (it is folded into it)")
    if not bn.track_running_stats or bn.running_mean is None:
        raise SparsynError(f"{type(bn).__name__} '{name}' has no running statistics (track_running_stats=False); "
                           "use the default BatchNorm, whose eval-mode statistics can be folded")
    gamma = bn.weight.detach().double().numpy() if bn.affine else np.ones(bn.num_features)
    beta = bn.bias.detach().double().numpy() if bn.affine else np.zeros(bn.num_features)
    mean = bn.running_mean.detach().double().numpy()
    var = bn.running_var.detach().double().numpy()
    scale = gamma / np.sqrt(var + bn.eps)
    prev.weight = prev.weight * scale[:, None]
    prev.bias = (prev.bias - mean) * scale + beta
    return None


def run_float(layers: list[FloatLayer], x: torch.Tensor, collect: bool = False):
    """Run the imported layers in float64 (calibration, and the check against the module); each layer reads the
    tensors it names (the layer before it by default). Returns the last output flattened, or every output."""
    outs: dict[str, torch.Tensor] = {MODEL_INPUT: x.double()}
    prev = MODEL_INPUT
    for l in layers:
        srcs = l.inputs or (prev,)
        x = outs[srcs[0]].reshape(x.shape[0], *l.in_shape)
        if l.kind in ("conv", "linear"):
            c = l.in_shape[0]
            w = torch.as_tensor(l.weight).reshape(l.out_shape[0], c, *l.kernel)
            x = F.conv2d(x, w, torch.as_tensor(l.bias), stride=l.stride, padding=l.padding)
        elif l.kind == "maxpool":
            k, s, p = l.pool
            x = F.max_pool2d(x, k, s, p)
        elif l.kind == "avgpool":
            x = F.avg_pool2d(x, l.kernel, l.stride)
        elif l.kind == "add":
            x = x + outs[srcs[1]].reshape(x.shape[0], *l.in_shape)
        else:
            x = x.reshape(x.shape[0], *l.out_shape)
        if l.relu:
            x = F.relu(x)
        if l.act_max is not None:
            x = x.clamp(max=l.act_max)
        outs[l.name] = x
        prev = l.name
    if collect:
        return [outs[l.name] for l in layers]
    return x.reshape(x.shape[0], -1)


def _check_with_torch(module, layers, input_shape):
    """The imported layers must compute what the module computes (catches unsupported hidden ops)."""
    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = copy.deepcopy(module).double()(x.double()).reshape(2, -1)
    got = run_float(layers, x)
    if ref.shape != got.shape or not torch.allclose(ref, got, rtol=1e-6, atol=1e-6):
        raise SparsynError(f"model {type(module).__name__} does not compute a graph of {SUPPORTED} "
                           "(its forward() does more than these layers); simplify the model")
