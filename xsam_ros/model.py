"""Loading, warming up and freeing the node's model, from the node's parameters; no ROS.

``load_model(parameters)`` is what the node's ``on_activate`` runs on its worker thread (and
what a bag-replay tool runs): ``xsam_engine.backends.create_predictor`` with the model / backend
/ device parameters, then one small warm-up inference so that the first real command does not pay
for lazy initialisation and a model that cannot answer fails here, not on the first frame. Every
failure, wherever it happens (imports, thread setting, loading, warm-up and its clean-up, the
summary), raises ``ModelLoadError`` whose text is the reason the node reports and whose ``fix``
says what to do. With ``backend`` triton the image stages run on the Triton server
(``triton_url``): a server that is unreachable, lacks a model or serves other weights fails here
too (the fix is the server's, not the model's), unless ``triton_fallback`` lets an unreachable
server be replaced by the local backend until it is back.

``release_model`` undoes it: the caller closes the server connection (``close_stages``) and drops
its references first; then garbage collection,
the CUDA cache (``torch.cuda.empty_cache()``) and, with glibc, ``malloc_trim(0)`` so that the
freed weights leave the process's resident memory (the lifecycle test measures it).
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MODEL_NAME = "built-in tabletop demo model (xsam_engine/default_model)"


MODEL_FIX = "fix the model (model_path)"
SERVER_FIX = ("start the Triton server or correct triton_url / triton_protocol (or set triton_fallback: true to run "
              "locally while it is down; docs/fleet.md)")


class ModelLoadError(RuntimeError):
    """Loading the model failed; the text is the reason the node reports (the cause is chained).

    ``fix``: what the operator does before activating again (the model, or the Triton server).
    """

    def __init__(self, reason: str, fix: str = MODEL_FIX) -> None:
        super().__init__(reason)
        self.fix = fix


@dataclass(eq=False)
class LoadedModel:
    """A predictor ready for frames.

    Attributes:
        predictor: the ``xsam_engine.predictor.XSamPredictor``.
        info: ``xsam_engine.backends.BackendInfo`` (backend and device that run, fallback reason).
        parameters: number of model parameters.
        threads: PyTorch CPU threads set for inference.
        seconds: wall time of loading and warm-up.
    """

    predictor: Any
    info: Any
    parameters: int
    threads: int
    seconds: float

    def describe(self, name: str) -> str:
        """The "Model ready: ..." log line."""
        return (f"Model ready: {name} ({self.parameters / 1e6:.1f} M parameters), {self.info.summary()}, "
                f"{self.threads} CPU thread(s), loaded in {self.seconds:.1f} s.")

    def fallback_warning(self) -> str:
        """The warning when the requested backend / device could not run ("" when they did)."""
        info = self.info
        if not info.fallback:
            return ""
        if info.backend == "triton":  # triton_fallback at activation: the server was unreachable
            return f"backend:=triton device:={info.requested_device}: {info.reason}; the LLM runs on {info.device}."
        return (f"backend:={info.requested_backend} device:={info.requested_device} cannot run here: {info.reason}; "
                f"using {info.backend} on {info.device}.")


def failure(error: BaseException | None, node: str) -> tuple[str, str, BaseException | None]:
    """(reason, log text, exception whose traceback to log) for an activation whose loading raised ``error``
    (None: interrupted by shutdown)."""
    if error is None:
        reason = "the node shut down while the model was loading"
    else:
        reason = str(error) if isinstance(error, ModelLoadError) else f"loading the model failed: {error!r}"
    fix = error.fix if isinstance(error, ModelLoadError) else MODEL_FIX
    text = (f"Activation failed (ERROR), model not available: {reason}. The node returns to unconfigured: {fix}, "
            f"then configure and activate it again (ros2 lifecycle set {node} configure, then activate).")
    return reason, text, error.__cause__ if isinstance(error, ModelLoadError) else error


def model_name(parameters: Mapping[str, Any]) -> str:
    return parameters["model_path"] or DEFAULT_MODEL_NAME


def predictor_options(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``create_predictor`` keyword arguments from the node's parameters (parameters.py)."""
    return {
        "backend": parameters["backend"],
        "device": parameters["device"],
        "engine_cache_dir": parameters["engine_cache_dir"] or None,
        "engine_file_path": parameters["engine_file_path"] or None,
        "force_engine_update": parameters["force_engine_update"],
        "enable_fp16": parameters["enable_fp16"],
        "enable_int8": parameters["enable_int8"],
        "max_workspace_size": parameters["max_workspace_size"] or None,
        "triton_url": parameters["triton_url"],
        "triton_protocol": parameters["triton_protocol"],
        "triton_timeout_s": parameters["triton_timeout_s"],
        "triton_fallback": parameters["triton_fallback"],
        "log": False,  # the node logs the fallback itself, once, through its ROS logger
    }


def load_model(parameters: Mapping[str, Any]) -> LoadedModel:
    """Load and warm up the model the parameters name; raises ModelLoadError with the reason."""
    try:
        return _load(parameters)
    except ModelLoadError:
        raise
    except Exception as error:
        raise ModelLoadError(f"loading the model failed: {type(error).__name__}: {error}") from error


def _load(parameters: Mapping[str, Any]) -> LoadedModel:
    import torch

    started = time.monotonic()
    threads = parameters["cpu_threads"] or max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(threads)
    path = parameters["model_path"] or None
    if path is not None and not Path(path).expanduser().is_dir():
        raise ModelLoadError(f"model_path {path!r} is not a directory (expected model.safetensors, config.json "
                             "and tokenizer files written by save_pretrained)")
    from xsam_engine.triton.errors import TritonServerError

    try:
        from xsam_engine.backends import create_predictor

        created = create_predictor(None if path is None else Path(path).expanduser(), **predictor_options(parameters))
    except TritonServerError as error:  # the model loaded; the server is unreachable or cannot serve it
        raise ModelLoadError(f"the Triton server is not ready for this model: {error}", SERVER_FIX) from None
    except Exception as error:  # missing files, wrong format, out of memory
        raise ModelLoadError(f"could not load the model from {path or 'xsam_engine/default_model'}: "
                             f"{type(error).__name__}: {error}") from None
    warm_up(created.predictor)
    count = sum(p.numel() for p in created.predictor.model.parameters() if p.device.type != "meta")
    return LoadedModel(created.predictor, created.info, count, threads, time.monotonic() - started)


def warm_up(predictor) -> None:
    """One small inference (a 64x64 black image, "object"); its failure is the loading's (ModelLoadError)."""
    from xsam_engine.requests import SegmentationRequest, Task

    try:
        predictor.set_image(np.zeros((64, 64, 3), dtype=np.uint8))
        predictor.segment(SegmentationRequest(Task.REFERRING, text="object"))
    except Exception as error:
        from xsam_engine.triton.errors import TritonServerError

        raise ModelLoadError(f"the model loaded but its warm-up inference (a 64x64 image, 'object') failed: "
                             f"{type(error).__name__}: {error}",
                             SERVER_FIX if isinstance(error, TritonServerError) else MODEL_FIX) from error
    finally:
        predictor.reset_image()


def close_stages(predictor) -> None:
    """Close what the predictor's image stages hold outside the process (the Triton client); no-op otherwise."""
    close = getattr(getattr(predictor, "stages", None), "close", None)
    if close is not None:
        close()


def release_model(device: str) -> None:
    """Return the memory of a model whose references the caller has dropped (see the module docstring)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if device == "cuda" and torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): the memory is still free for this process
            pass
