"""What fgirewrite knows about tensor operations, as tables.

The backward analysis asks these tables whether an operation applied to the incoming gradient
keeps the result linear and elementwise in it, whether a call draws random numbers, and
whether a result may share memory with its input (which decides if an in-place op on it is
safe to turn into an out-of-place one).
"""

from __future__ import annotations

# Methods of a gradient tensor that keep it linear and elementwise, by role.
GRAD_IDENTITY = frozenset({"clone", "contiguous"})
GRAD_DROPPED = frozenset({"detach"})  # only affects double backward; FGI's gradient path
GRAD_CAST = frozenset({"float", "double", "half", "bfloat16", "to", "type", "type_as"})
# Casts that truncate: ``grad_output.to(torch.int32)`` is not linear in grad_output.
NON_FLOAT_DTYPES = frozenset(
    f"torch.{name}"
    for name in (
        *("bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"),
        *("short", "int", "long", "quint8", "qint8", "qint32"),
        *("BoolTensor", "ByteTensor", "CharTensor", "ShortTensor", "IntTensor", "LongTensor"),
    )
)
FLOAT_DTYPES = frozenset(
    f"torch.{name}"
    for name in ("float16", "float32", "float64", "bfloat16", "half", "float", "double")
)
INTEGRAL_METHODS = frozenset({"long", "int", "short", "char", "byte", "bool"})
GRAD_SCALE = frozenset({"mul", "multiply", "div", "divide", "true_divide"})
CAST_DTYPES = {
    "float": "torch.float32",
    "double": "torch.float64",
    "half": "torch.float16",
    "bfloat16": "torch.bfloat16",
}
# Shape changes after a gradient's reduction: the summed gradient's shape only, which
# autograd's own reduction to the input's shape makes irrelevant.
AFTER_REDUCTION = frozenset(
    {"view", "reshape", "unsqueeze", "squeeze", "flatten", "view_as", "reshape_as", "contiguous"}
)
# Calls known not to be linear in the gradient, and linear ones that mix its elements.
NONLINEAR = frozenset(
    {
        *("sign", "sgn", "abs", "absolute", "exp", "log", "tanh", "sigmoid", "relu", "clamp"),
        *("clip", "round", "floor", "ceil", "trunc", "fix", "sqrt", "rsqrt", "pow", "square"),
        *("frac", "fmod", "remainder", "maximum", "minimum", "max", "min", "nan_to_num"),
        *("hardtanh", "softplus", "erf", "reciprocal", "heaviside", "threshold"),
    }
)
NOT_ELEMENTWISE = frozenset(
    {
        *("mean", "cumsum", "cumprod", "flip", "roll", "mm", "matmul", "bmm", "einsum"),
        *("conv1d", "conv2d", "conv3d", "avg_pool1d", "avg_pool2d", "interpolate", "diff"),
        *("gather", "index_select", "repeat", "expand", "expand_as", "transpose", "permute"),
        *("t", "view", "reshape", "flatten", "unsqueeze", "squeeze", "narrow", "select"),
        *("mv", "dot", "outer", "linear", "fft", "std", "var", "norm", "softmax", "prod"),
    }
)
GRAD_NEGATE = frozenset({"neg", "negative"})
# Tensor methods that take another tensor: with the gradient as that one, none is linear in it
# (``x.add(g)``); a method not among them belongs to some other object (unknown).
TENSOR_METHODS = (
    NONLINEAR
    | NOT_ELEMENTWISE
    | frozenset(
        {
            *("add", "sub", "subtract", "div", "divide", "true_divide", "pow", "float_power"),
            *("atan2", "lerp", "addcmul", "addcdiv", "copy_", "masked_fill", "index_fill"),
            *("scatter", "scatter_add", "index_add", "index_copy", "put", "take", "dist"),
            *("mul", "multiply", "where", "to", "type", "type_as", "new_tensor", "fill_"),
        }
    )
)
GRAD_REDUCE = frozenset({"sum", "sum_to_size"})

# torch functions that are linear in their tensor argument(s), with the same roles.
TORCH_SCALE = frozenset(
    {"torch.mul", "torch.multiply", "torch.div", "torch.divide", "torch.true_divide"}
)
TORCH_NEGATE = frozenset({"torch.neg", "torch.negative"})
TORCH_IDENTITY = frozenset({"torch.clone"})
TORCH_REDUCE = frozenset({"torch.sum"})
TORCH_WHERE = frozenset({"torch.where"})
TORCH_MASKED_FILL = frozenset({"torch.masked_fill"})

# Uses of the incoming gradient that read only its shape, dtype or device: the output has the
# same, so fgirewrite reads them from the output instead.
SHAPE_ATTRIBUTES = frozenset({"shape", "dtype", "device", "ndim", "layout", "is_cuda"})
SHAPE_METHODS = frozenset(
    {"size", "dim", "numel", "new_zeros", "new_ones", "new_full", "new_empty", "new_tensor"}
)
SHAPE_FUNCTIONS = frozenset(
    {"torch.zeros_like", "torch.ones_like", "torch.empty_like", "torch.full_like"}
)
ZERO_FUNCTIONS = frozenset({"torch.zeros_like", "torch.zeros"})
# Methods of a tensor whose result is not a tensor (a number, a size, a flag).
NOT_TENSOR_METHODS = frozenset(
    {
        *("item", "tolist", "dim", "ndimension", "size", "numel", "nelement", "stride"),
        *("element_size", "storage_offset", "data_ptr", "is_contiguous", "is_floating_point"),
        *("is_complex", "get_device", "is_set_to", "equal", "__len__", "__bool__", "__float__"),
    }
)
NOT_TENSOR_FUNCTIONS = frozenset(
    f"torch.{name}"
    for name in (
        *("is_tensor", "is_floating_point", "is_complex", "is_nonzero", "numel", "equal"),
        *("allclose", "is_same_size", "result_type", "promote_types", "can_cast"),
    )
)
ZERO_METHODS = frozenset({"new_zeros", "zero_"})
# Calls that make a tensor filled with one of their arguments (by position): zeros when it is
# a literal zero (``torch.tensor(0.0, device=d)``, ``torch.full_like(x, 0)``).
FILLED_BY = {
    "torch.tensor": 0,
    "torch.as_tensor": 0,
    "torch.scalar_tensor": 0,
    "torch.full": 1,
    "torch.full_like": 1,
    "new_tensor": 0,
    "new_full": 1,
    "fill": 0,
}


# One value in, a 0-d tensor out: it never widens a dimensioned tensor of its kind.
SCALAR_TENSOR = frozenset({"torch.tensor", "torch.as_tensor", "torch.scalar_tensor"})


def makes_zeros(name: str, positional: list[object]) -> bool:
    """A call of ``name`` (a qualified function or a method) makes zeros; ``positional`` are
    the known values of its positional arguments."""
    if name in ZERO_FUNCTIONS or name in ZERO_METHODS:
        return True
    index = FILLED_BY.get(name)
    if index is None or index >= len(positional):
        return False
    value = positional[index]
    return isinstance(value, (int, float)) and value == 0


RANDOM_FUNCTIONS = frozenset(
    {
        "torch.rand",
        "torch.rand_like",
        "torch.randn",
        "torch.randn_like",
        "torch.randint",
        "torch.randint_like",
        "torch.randperm",
        "torch.bernoulli",
        "torch.normal",
        "torch.poisson",
        "torch.multinomial",
        "torch.nn.functional.dropout",
        "torch.dropout",
    }
)
RANDOM_PREFIXES = ("torch.distributions.", "numpy.random.", "random.", "torch.random.")
RANDOM_METHODS = frozenset(
    {
        "bernoulli",
        "bernoulli_",
        "uniform_",
        "normal_",
        "random_",
        "exponential_",
        "geometric_",
        "cauchy_",
        "log_normal_",
        "multinomial",
        "sample",
        "rsample",
    }
)

# Results that may share memory with the receiver: an in-place op on either changes both.
MAY_ALIAS_METHODS = frozenset(
    {
        "view",
        "view_as",
        "reshape",
        "reshape_as",
        "expand",
        "expand_as",
        "t",
        "transpose",
        "permute",
        "squeeze",
        "unsqueeze",
        "flatten",
        "unflatten",
        "narrow",
        "select",
        "diagonal",
        "detach",
        "as_strided",
        "unfold",
        "split",
        "chunk",
        "unbind",
        "movedim",
        "swapaxes",
        "contiguous",
        "to",
        "float",
        "double",
        "half",
        "bfloat16",
        "type",
        "type_as",
        "cpu",
        "cuda",
    }
)
MAY_ALIAS_ATTRIBUTES = frozenset({"data", "T", "mT", "H", "real", "imag"})

# Decorators on a helper function that do not change what it computes.
TRANSPARENT_DECORATORS = frozenset(
    {
        "staticmethod",
        "torch.jit.script",
        "torch.jit.ignore",
        "torch.jit.unused",
        "torch.no_grad",
        "torch.compile",
        "torch.autograd.function.once_differentiable",
    }
)

# In-place methods that change a tensor's metadata (shape, strides, storage, autograd flags),
# not only its values: on the detached alias the rewrite's forward works on, the caller's
# tensor would not see the change.
METADATA_INPLACE = frozenset(
    {
        *("set_", "resize_", "resize_as_", "as_strided_", "t_", "transpose_", "squeeze_"),
        *("unsqueeze_", "swapdims_", "swapaxes_", "detach_", "requires_grad_", "retain_grad"),
    }
)

# ctx calls in a forward or setup_context that change nothing fgirewrite produces.
CTX_HARMLESS = frozenset({"set_materialize_grads"})
CTX_REFUSED = frozenset({"mark_non_differentiable", "mark_dirty"})


def is_inplace(method: str) -> bool:
    """``pow_`` and the like: a trailing underscore, not a dunder."""
    return method.endswith("_") and not method.endswith("__") and len(method) > 1


# A callee whose own name says it draws (a helper ``random_mask``, ``numpy.random.rand``).
RANDOM_NAME_PARTS = ("rand", "bernoulli")


def may_draw_random(qualified: str | None, method: str | None) -> bool:
    """``is_random_call``, or a callee whose name says it draws: whether a forward value may
    not be recomputed later (when unsure, it may not)."""
    name = method or (qualified.rsplit(".", 1)[-1] if qualified else None)
    if name is not None and (name in RANDOM_METHODS or any(p in name for p in RANDOM_NAME_PARTS)):
        return True
    return is_random_call(qualified, method)


def is_random_call(qualified: str | None, method: str | None) -> bool:
    if method is not None and method in RANDOM_METHODS:
        return True
    if qualified is None:
        return False
    return qualified in RANDOM_FUNCTIONS or qualified.startswith(RANDOM_PREFIXES)
