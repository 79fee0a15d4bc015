"""Detectors as ONNX and TorchScript files, and a detector's CPU passes in ONNX Runtime.

torchvision documents ONNX export of its detectors through the TorchScript-based (tracing) exporter, opset 11 or
later, one image of a fixed size per call. Measured here (torch 2.14, torchvision 0.29, onnxruntime 1.32):

- Faster R-CNN, RetinaNet, FCOS and Mask R-CNN over an EfficientNet-Lite0 pyramid export with ``dynamo=False`` in
  2-8 s, and ONNX Runtime returns PyTorch's detections on images the export never saw, however many boxes each
  has (none too): boxes within 2.2e-4 px at 96 px, scores within 5e-6, labels equal (detections of equal score may
  come in another order), Mask R-CNN's masks within 9e-5. The traced TorchScript file gives PyTorch's outputs.
- The ``torch.export``-based exporter (``dynamo=True``, `easytransfer.deploy.convert.export_onnx`'s) fails on
  Faster R-CNN, RetinaNet and FCOS: the number of boxes depends on the data (``GuardOnDataDependentSymNode``, in
  torchvision's ``batched_nms`` or the candidates kept per level). ``torch.jit.script`` fails too (first on the
  feature body's Python, which is not TorchScript), hence the traced TorchScript file.

The file's input is ``input``: one image, ``(1, 3, size, size)`` float in [0, 1] (the bundle's size; the detector
normalises it inside); its outputs ``boxes`` ``(n, 4)`` (x1, y1, x2, y2 in the input's pixels), ``scores`` ``(n,)``,
``labels`` ``(n,)`` (1 is the bundle's first class, 0 the background) and, for a Mask R-CNN, ``masks``
``(n, 1, size, size)`` probabilities. The detector's own score threshold and detection cap are in the file; ONNX
Runtime refuses another input shape (a batch of two, another size).

On the CPU a pass over many images (`DetectionPredictor.predict_folder`) runs in ONNX Runtime when it is installed
and gives PyTorch's detections on the first image (`detector_forward`): at 320 px on 2 shared CPU cores the
forward pass took 160-390 ms per image against 960-1490 ms in PyTorch (Faster R-CNN / RetinaNet / FCOS), after a
4-8 s export; `predict_folder` over 24 images took 42-45 s against 146-147 s (Faster R-CNN), 55-62 s against
181-207 s (FCOS), the export included.

>>> path = export_detector_onnx(learn.model, "detector.onnx", size=320)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ...files import atomic_write
from ...runtime import pass_runtime

__all__ = ["DETECTION_OUTPUTS", "DETECTOR_ONNX_MIN_IMAGES", "DETECTOR_OPSET", "DetectorForward", "DetectorOutputs",
           "detector_forward", "export_detector_onnx", "export_detector_torchscript", "same_detections"]

DETECTION_OUTPUTS = ("boxes", "scores", "labels", "masks")  # the file's outputs, in this order (masks: Mask R-CNN)
DETECTOR_OPSET = 17  # measured to export all three heads (torchvision asks for >= 11)
# "auto" runs a pass in ONNX Runtime from this many images: the export and session took 4-8 s and saved 0.8-1.1 s
# per 320 px image on 2 cores (above), so it pays from ~8 images; a single `predict` stays in PyTorch
DETECTOR_ONNX_MIN_IMAGES = 16
# ONNX Runtime against PyTorch, measured: boxes within 2e-4 px, scores within 3e-6; a wrong export is far off
SAME_BOX_ATOL = 0.05
SAME_SCORE_ATOL = 1e-4

Detections = dict[str, torch.Tensor]


class DetectorOutputs(nn.Module):
    """A torchvision detector as a module from one ``(1, 3, H, W)`` image to a tuple of tensors (`outputs`), the
    form the tracing exporters take.

    Attributes:
        detector: the detector (in eval mode); outputs: the names of the returned tensors (`DETECTION_OUTPUTS`
            the detector gives).

    >>> flat = DetectorOutputs(model.eval(), ("boxes", "scores", "labels"))  # doctest: +SKIP
    >>> boxes, scores, labels = flat(torch.rand(1, 3, 96, 96))  # doctest: +SKIP
    """

    def __init__(self, detector: nn.Module, outputs: tuple[str, ...]):
        super().__init__()
        self.detector = detector
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        found = self.detector([x[0]])[0]
        return tuple(found[name] for name in self.outputs)


def _example(size: int) -> torch.Tensor:
    """A fixed noise image to trace with (any image works: the graph does not depend on its detections)."""
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def _traceable(model: nn.Module, size: int) -> tuple[DetectorOutputs, torch.Tensor]:
    """A CPU copy of `model` as `DetectorOutputs` with every output it gives, and the example to trace it with."""
    model = copy.deepcopy(model).eval().cpu()
    example = _example(size)
    with torch.inference_mode():
        found = model([example[0]])[0]
    return DetectorOutputs(model, tuple(name for name in DETECTION_OUTPUTS if name in found)), example


def _onnx_bytes(model: nn.Module, size: int, opset: int) -> tuple[bytes, tuple[str, ...]]:
    """`model` exported to ONNX in memory (the tracing exporter), and its output names."""
    flat, example = _traceable(model, size)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on data-dependent shapes and its deprecation notice
        torch.onnx.export(flat, (example,), buffer, input_names=["input"], output_names=list(flat.outputs),
                          opset_version=opset, dynamo=False)
    return buffer.getvalue(), flat.outputs


def export_detector_onnx(model: nn.Module, path: str | os.PathLike, size: int, *,
                         opset: int = DETECTOR_OPSET) -> Path:
    """Write a torchvision detector (Faster R-CNN, RetinaNet, FCOS, Mask R-CNN) as an ONNX file.

    The file takes one ``(1, 3, size, size)`` image in [0, 1] as ``input`` and gives ``boxes``, ``scores``,
    ``labels`` (and ``masks``): see the module docstring. ``load_model(bundle).export_onnx(path)`` calls it with
    the bundle's size.

    Args:
        model: the detector (``learn.model``, ``predictor.model``); it is copied, not changed.
        path: the ``.onnx`` file (written atomically).
        size: the side of the images it will take (the bundle's ``preprocessing.size``).
        opset: the ONNX opset (`DETECTOR_OPSET`; torchvision needs 11 or later).

    >>> export_detector_onnx(learn.model, "detector.onnx", size=320)  # doctest: +SKIP
    PosixPath('detector.onnx')
    """
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'easytransfer[onnx]'") from None
    data, _ = _onnx_bytes(model, size, opset)
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def export_detector_torchscript(model: nn.Module, path: str | os.PathLike, size: int) -> Path:
    """Write a torchvision detector as a traced TorchScript file (``torch.jit.load`` runs it without easytransfer).

    It takes and gives what the ONNX file does (`export_detector_onnx`), as a tuple of tensors.

    >>> export_detector_torchscript(learn.model, "detector.pt", size=320)  # doctest: +SKIP
    PosixPath('detector.pt')
    """
    flat, example = _traceable(model, size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # check_trace would rerun the trace and compare graphs, which differ in their data-dependent shapes
        traced = torch.jit.trace(flat, example, check_trace=False)

    def write(tmp: Path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.save's deprecation notice
            torch.jit.save(traced, str(tmp))

    return atomic_write(path, write)


def same_detections(got: Detections, expected: Detections, *, box_atol: float = SAME_BOX_ATOL,
                    score_atol: float = SAME_SCORE_ATOL) -> bool:
    """Whether two detection dicts hold the same detections, in any order (equal scores may come in either).

    Each detection must have one of the other's with the same label, its score within `score_atol` and its box
    within `box_atol` pixels, and both must have as many.

    >>> d = {"boxes": torch.tensor([[1.0, 2, 3, 4]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([1])}
    >>> same_detections(d, d), same_detections(d, {**d, "labels": torch.tensor([2])})
    (True, False)
    """
    if len(got["scores"]) != len(expected["scores"]):
        return False
    close = ((expected["labels"][:, None] == got["labels"][None])
             & ((expected["scores"][:, None] - got["scores"][None]).abs() <= score_atol)
             & ((expected["boxes"][:, None] - got["boxes"][None]).abs().amax(dim=-1) <= box_atol))
    return bool(close.any(dim=1).all() and close.any(dim=0).all())


class DetectorForward:
    """A detector's eval-mode pass on the CPU: a callable from a ``(B, 3, H, W)`` batch to one detection dict per
    image, in ONNX Runtime where it gives PyTorch's detections, else in PyTorch (as `easytransfer.runtime.CpuForward`
    does for single-tensor models).

    ``runtime`` says what runs it: ``"onnxruntime"`` or ``"torch"`` (before the first call: what was asked for).
    The session is exported on the first call for that batch's image size and checked against PyTorch on it;
    when the export fails or the detections differ, this and every later call run in PyTorch; images of another
    size run in PyTorch.

    >>> forward = detector_forward(model.eval(), runtime="onnxruntime")  # doctest: +SKIP
    >>> forward(torch.rand(2, 3, 96, 96))[0]["boxes"].shape, forward.runtime  # doctest: +SKIP
    (torch.Size([12, 4]), 'onnxruntime')
    """

    def __init__(self, model: nn.Module, runtime: str):
        self.model = model
        self.runtime = runtime
        self._session = None
        self._outputs: tuple[str, ...] = ()
        self._size: tuple[int, ...] | None = None
        self._checked = runtime == "torch"

    def __call__(self, images: torch.Tensor) -> list[Detections]:
        if not self._checked:
            self._checked = True
            expected = self._torch(images)
            self._start_session(tuple(images.shape[-2:]))
            got = self._session_or_none(images)
            if got is None or not all(same_detections(g, e) for g, e in zip(got, _cpu(expected))):
                self._session = None
            self.runtime = "onnxruntime" if self._session is not None else "torch"
            return expected
        if self._session is not None and tuple(images.shape[-2:]) == self._size:
            got = self._session_or_none(images)
            if got is not None:
                return got
        return self._torch(images)

    def _torch(self, images: torch.Tensor) -> list[Detections]:
        with torch.inference_mode():
            return self.model(images)

    def _start_session(self, size: tuple[int, ...]) -> None:
        import onnxruntime as ort

        if size[0] != size[1]:  # the predictors' images are square; anything else stays in PyTorch
            return
        try:
            data, self._outputs = _onnx_bytes(self.model, size[0], DETECTOR_OPSET)
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()  # follows torch.set_num_threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3  # errors only
            self._session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
            self._size = size
        except Exception:  # a detector the tracer or ONNX Runtime cannot take runs in PyTorch, as before
            self._session = None

    def _session_or_none(self, images: torch.Tensor) -> list[Detections] | None:
        """The session's detections, or ``None`` (and PyTorch from now on) when it cannot run `images`."""
        try:
            return [self._run(x) for x in images.detach().cpu().float()]
        except Exception:
            self._session, self.runtime = None, "torch"
            return None

    def _run(self, image: torch.Tensor) -> Detections:
        arrays = self._session.run(None, {"input": image[None].contiguous().numpy()})
        return {name: torch.from_numpy(a) for name, a in zip(self._outputs, arrays)}


def _cpu(found: list[Detections]) -> list[Detections]:
    return [{k: v.detach().cpu() for k, v in d.items()} for d in found]


def detector_forward(model: nn.Module, *, runtime: str | None = None, images: int | None = None) -> DetectorForward:
    """`model`'s eval-mode pass on the CPU, in ONNX Runtime where it gives PyTorch's detections (`DetectorForward`).

    Args:
        model: a torchvision detector in eval mode, on the CPU.
        runtime: ``"auto"`` (ONNX Runtime when installed and the pass has at least `DETECTOR_ONNX_MIN_IMAGES`
            images), ``"onnxruntime"`` (whatever the number), ``"torch"``; ``None`` reads ``EASYTRANSFER_RUNTIME``.
        images: how many images the pass will run (``None``: unknown, taken as many).

    >>> detector_forward(model.eval(), runtime="torch").runtime  # doctest: +SKIP
    'torch'
    """
    return DetectorForward(model, pass_runtime(runtime, images, DETECTOR_ONNX_MIN_IMAGES))
