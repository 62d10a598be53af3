"""Torch networks run through ONNX Runtime on CPU (the `runtime` param of the CNN extractors), and the ORT session
settings every ONNX model of aver shares.

A network is exported once with torch.onnx (TorchScript exporter) into `$AVER_CACHE/onnx/`, under a name keyed by
the sha256 of its weights and `EXPORT_VERSION` (bumped whenever the export code or a network's forward changes) and
the torch version: changed weights re-export, and loading an .onnx file is parsing a protobuf, which runs no code.
The file is written to a temporary name and renamed, so concurrent workers never read half a file.

`runtime: auto` (the default) is ONNX Runtime on a CPU device and torch on a CUDA one. On these small CNNs ORT is
1.6-1.9x (RetinaFace MobileNet-0.25), 3.3x (mini-Xception) and 4-5x (EfficientAT mn04) faster than torch on CPU,
within 2e-5 of its outputs (docs/face_detection.md).

Determinism: intra-op threads are pinned from the worker's CPU share (as torch's), inter-op to 1, and spinning off.
Same inputs then give the same bytes on every run of one machine; across machines they do not always: ORT's MLAS
kernels and its NCHWc layout pass pick by instruction set (AVX-512 vs AVX2 vs SSE) at run time, and the released
wheel has no switch to pin it (only a build-time choice). `runtime: torch` keeps the AVX2-pinned path of
pipelines/__init__.py where bytes must match across CPUs.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from pipelines.weights import cache_dir

EXPORT_VERSION = "1"
RUNTIMES = ("auto", "onnx", "torch")


def check_runtime(kind: str, runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"{kind}: runtime must be one of {list(RUNTIMES)}, not {runtime!r}")


def uses_onnx(runtime: str, device: str) -> bool:
    """Whether a network runs through ONNX Runtime (`auto`: on CPU devices only)."""
    return runtime == "onnx" or (runtime == "auto" and not str(device).startswith("cuda"))


def session(model: bytes | Path, num_threads: int, device: str = "cpu", owner: str = "onnx"):
    """An ORT InferenceSession with aver's settings: CPU or CUDA provider by `device`, `num_threads` intra-op
    threads that do not spin (a spinning thread steals the other worker's core), one inter-op thread."""
    import onnxruntime as ort
    device = str(device)
    provider = "CUDAExecutionProvider" if device.startswith("cuda") else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise RuntimeError(f"{owner}: device {device!r} requested but onnxruntime has no {provider}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(num_threads))
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    device_id = int(device.split(":")[1]) if ":" in device else 0
    providers = [(provider, {"device_id": device_id})] if provider.startswith("CUDA") else [provider]
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=providers)


def exported(name: str, weights_sha256: str, net, example: tuple, input_names: list[str],
             output_names: list[str], dynamic_axes: dict) -> Path:
    """Path of `net` exported to ONNX in the cache (exported now if absent). `example`: torch inputs of the
    trace; `dynamic_axes`: torch.onnx's {input or output name: {axis: label}}."""
    import torch
    folder = cache_dir().parent / "onnx"
    path = folder / f"{name}-{weights_sha256[:16]}-x{EXPORT_VERSION}-torch{torch.__version__.split('+')[0]}.onnx"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")     # the TorchScript exporter's deprecation and tracer notices
            torch.onnx.export(net.eval(), example, tmp, input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic_axes, opset_version=17, dynamo=False)
        os.chmod(tmp, 0o644)       # mkstemp's 0600 would hide the cache from other users of a shared one
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class OnnxNet:
    """A drop-in for a torch network: torch tensors in (float32, or bool where the graph takes a mask), the graph's
    outputs out as torch tensors on `device` (`runtime: onnx` on a CUDA device needs onnxruntime's CUDA provider,
    else `session` says so)."""

    def __init__(self, path: Path, num_threads: int, owner: str, device: str = "cpu"):
        self.session = session(path, num_threads, device, owner)
        self.inputs = [(i.name, bool if i.type == "tensor(bool)" else np.float32) for i in self.session.get_inputs()]
        self.device = str(device)

    def __call__(self, *tensors):
        import torch
        feed = {name: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=dtype)
                for (name, dtype), t in zip(self.inputs, tensors)}
        return tuple(torch.from_numpy(out).to(self.device) for out in self.session.run(None, feed))
