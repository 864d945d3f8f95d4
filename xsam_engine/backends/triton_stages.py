"""`ImageStages` on a (shared) NVIDIA Triton Inference Server, through `tritonclient`.

    stages = TritonStages(config, TritonOptions(url="gpu-server:8001"), fingerprint=model_fingerprint(model))

The server serves the repository written by `python -m xsam_engine.export --triton-repository`
(one model per graph, `xsam_engine.triton.repository`). The predictor does not change: this is an
`ExportedGraphStages` whose `run_graph` is one `infer` call.

* Protocols: gRPC (default; `tritonclient.grpc`) or HTTP (`tritonclient.http`).
* Start-up: the server and every model (`GRAPH_NAMES`) must be ready, and each model's
  `xsam_fingerprint` parameter must equal this model's fingerprint; otherwise a `TritonServerError`
  names the server, the missing or foreign model(s) and the fix.
* Per request: `timeout_s` bounds every call (gRPC deadline / HTTP network timeout).
* Server restart: a call that fails for connection reasons drops the client, makes a new one and
  tries once more (a gRPC channel would otherwise wait out its reconnect back-off, which grows
  to minutes); if that fails too, `TritonUnavailableError` (a `TritonServerError`, a RuntimeError;
  `xsam_engine/triton/errors.py`) names the server URL.
  The next call tries again, so the stages recover as soon as the server is back.
* Tracked frames (`frame_ensemble`, default on): `encode_mask_image` / `encode_pixels` only keep
  the pixels, and `decode` sends them with the condition to the server's `xsam_frame` ensemble
  (mask encoder -> pixel decoder -> mask decoder), so the SAM pyramid and the pixel features
  never cross the network (released model: 25.7 MB per frame instead of 233 MB). The SAM tokens
  for the LLM are fetched from `mask_encoder` only when a command needs them. The predictor's
  stage timings then show the whole frame under "decoder".
* Health (`ServerProbe`): "is the server ready?" on a client of its own, for a monitor beside
  inference (the ROS node's /diagnostics).
* Fallback (only when given): while the server is unreachable, the graphs run on `fallback`
  (local ONNX Runtime / TensorRT / PyTorch graphs) and the server is retried every
  `retry_interval_s`. Without one, errors propagate: nothing is silently computed elsewhere.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..export.graphs import GRAPH_NAMES, GraphSpec, graph_specs
from ..modeling_outputs import MaskEncoderOutput, PixelDecoderOutput, SegDecoderOutput
from ..triton.address import url_problem
from ..triton.errors import TritonServerError, TritonUnavailableError
from ..triton.repository import FINGERPRINT_PARAMETER, FRAME_MODEL
from .common import AcceleratedMaskEncoderOutput, ExportedGraphStages

if TYPE_CHECKING:
    from ..configuration_xsam import XSamConfig

logger = logging.getLogger(__name__)

PROTOCOLS = ("grpc", "http")
# gRPC status codes that mean "the server is not there" (anything else is an answer from it).
_UNREACHABLE_STATUS = ("StatusCode.UNAVAILABLE",)


@dataclass(frozen=True)
class TritonOptions:
    """Where and how to reach the server.

    Attributes:
        url: "host:port" of the server (gRPC port 8001 / HTTP port 8000 by default); no scheme.
        protocol: "grpc" or "http".
        timeout_s: limit of every request, seconds (> 0).
        ssl: TLS. gRPC: `root_certificates` (CA, PEM file) and, for mutual TLS, `private_key` and
            `certificate_chain` (PEM files). HTTP: `root_certificates` is the CA file of an
            `ssl.create_default_context`.
        retry_interval_s: with a fallback, how long to stay on it before trying the server again.
        frame_ensemble: run tracked frames through the server's `xsam_frame` ensemble (features stay
            on the server); False = one call per stage (the features travel).
    """

    url: str = "127.0.0.1:8001"
    protocol: str = "grpc"
    timeout_s: float = 5.0
    ssl: bool = False
    root_certificates: str | None = None
    private_key: str | None = None
    certificate_chain: str | None = None
    retry_interval_s: float = 2.0
    frame_ensemble: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"triton protocol must be one of {PROTOCOLS}, got {self.protocol!r}.")
        problem = url_problem(self.url)
        if problem:
            raise ValueError(problem + ".")
        if not self.timeout_s > 0 or self.retry_interval_s < 0:
            raise ValueError(f"triton timeout_s must be > 0 and retry_interval_s >= 0, got {self.timeout_s}, {self.retry_interval_s}.")
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("Mutual TLS needs both private_key and certificate_chain.")

    @property
    def display(self) -> str:
        """The server as users name it, e.g. "grpc://gpu-server:8001" (in every error)."""
        return f"{self.protocol}{'s' if self.ssl else ''}://{self.url}"


def _is_unreachable(error: Exception) -> bool:
    """Connection-level failures (retry with a new client) vs answers from the server."""
    from tritonclient.utils import InferenceServerException

    if isinstance(error, InferenceServerException):
        return str(error.status()) in _UNREACHABLE_STATUS
    return isinstance(error, (OSError, TimeoutError)) or type(error).__name__ in ("Timeout", "ConnectionTimeout")


def _is_timeout(error: Exception) -> bool:
    from tritonclient.utils import InferenceServerException

    if isinstance(error, InferenceServerException):
        return str(error.status()) == "StatusCode.DEADLINE_EXCEEDED"
    return isinstance(error, TimeoutError) or "timeout" in type(error).__name__.lower()


def new_client(options: TritonOptions):
    """A tritonclient `InferenceServerClient` for `options` (gRPC or HTTP, TLS; HTTP with the timeout built in).

    One client per thread: the HTTP client (geventhttpclient) must not be shared between threads.
    """
    if options.protocol == "grpc":
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(
            options.url, ssl=options.ssl, root_certificates=options.root_certificates,
            private_key=options.private_key, certificate_chain=options.certificate_chain,
        )
    import tritonclient.http as httpclient

    context_factory = None
    if options.ssl and options.root_certificates:
        import functools
        import ssl

        context_factory = functools.partial(ssl.create_default_context, cafile=options.root_certificates)
    return httpclient.InferenceServerClient(
        options.url, connection_timeout=options.timeout_s, network_timeout=options.timeout_s,
        ssl=options.ssl, ssl_context_factory=context_factory,
    )


def call_timeout(options: TritonOptions) -> dict:
    """The per-call keyword that bounds a gRPC call by `timeout_s` (HTTP clients carry it from `new_client`)."""
    return {"client_timeout": options.timeout_s} if options.protocol == "grpc" else {}


def _close(client) -> None:
    if client is not None:
        try:
            client.close()
        except Exception:  # a half-dead client may fail to close; it is dropped either way
            pass


class ServerProbe:
    """Asks the server whether it is ready (Triton: live and every model loaded), on a client of its own.

    For a health check beside inference (the ROS node's diagnostics thread): it never touches the
    stages' client. After a failure the client is dropped, so the next check opens a fresh
    connection (no gRPC reconnect back-off), as the stages do.
    """

    def __init__(self, options: TritonOptions) -> None:
        self.options = options
        self._client = None

    def check(self) -> str:
        """"" when the server is ready; otherwise why not, naming the server. Bounded by `timeout_s`."""
        display = self.options.display
        try:
            if self._client is None:
                self._client = new_client(self.options)
            if self._client.is_server_ready(**call_timeout(self.options)):
                return ""
            reason = (f"Triton server {display} is live but not ready: a model is not loaded (see the server's log; "
                      "it serves the repository of `python -m xsam_engine.export --triton-repository DIR`).")
        except Exception as error:
            reason = (f"Triton server {display} is unreachable (health check): {error}. Check that tritonserver runs "
                      "there and the address/port/protocol are right.")
        self.close()
        return reason

    def close(self) -> None:
        client, self._client = self._client, None
        _close(client)


@dataclass(eq=False)
class RemoteMaskEncoderOutput(AcceleratedMaskEncoderOutput):
    """Frame mode: the SAM encoder has not run here; `pixel_values` (1, 3, S, S) go to the server."""

    pixel_values: torch.Tensor | None = field(default=None)


@dataclass(eq=False)
class RemotePixelFeatures(PixelDecoderOutput):
    """Frame mode: the pixel features live on the server; `decode` sends `pixel_values` again."""

    pixel_values: torch.Tensor | None = field(default=None)


def frame_spec(specs: dict[str, GraphSpec]) -> GraphSpec:
    """Inputs / outputs of the `xsam_frame` ensemble (repository.render_frame_ensemble)."""
    decoder = {t.name: t for t in specs["mask_decoder"].inputs}
    inputs = (specs["mask_encoder"].inputs[0], decoder["condition_embeds"], decoder["seg_embeds"])
    return GraphSpec(FRAME_MODEL, inputs, specs["mask_decoder"].outputs)


class TritonStages(ExportedGraphStages):
    """The five graphs on a Triton server; outputs come back as torch tensors in `dtype` on `device`.

    Args:
        config: the model configuration (graph names, output order).
        options: server address, protocol, timeout, TLS.
        device / dtype: where and in which dtype outputs are handed to the PyTorch parts.
        fingerprint: `model_fingerprint(model)` of the robot's model; None skips the check.
        fallback: local stages for the graphs while the server is unreachable (None = raise).

    Raises:
        TritonServerError (a RuntimeError) at construction if the server or a model is not ready, or serves other weights
        (with a fallback, an unreachable server is not an error: the check runs on first contact).
    """

    def __init__(
        self,
        config: XSamConfig,
        options: TritonOptions | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        fingerprint: str | None = None,
        fallback: ExportedGraphStages | None = None,
    ) -> None:
        self.config = config
        self.options = options or TritonOptions()
        self.device = torch.device(device)
        self.dtype = dtype
        self.fingerprint = fingerprint
        self.fallback = fallback
        self.specs = graph_specs(config)
        self.specs[FRAME_MODEL] = frame_spec(self.specs)
        self.model_inputs: dict[str, list[str]] = {}
        self.last_error: str | None = None
        self.using_fallback = False
        self._retry_at = 0.0
        self._client = None
        self._checked = False
        try:
            self.check_models()
        except TritonUnavailableError as error:
            if fallback is None:
                raise
            self._use_fallback(error)

    # -- connection ----------------------------------------------------------------------------

    @property
    def client(self):
        if self._client is None:
            self._client = new_client(self.options)
        return self._client

    def reset_client(self) -> None:
        """Drop the connection; the next call makes a new client (fresh channel, no back-off)."""
        client, self._client = self._client, None
        _close(client)

    def _call(self, what: str, method: str, *args, **kwargs):
        """One client call with the timeout; a connection failure is retried once on a new client."""
        kwargs.update(call_timeout(self.options))
        for attempt in (1, 2):
            try:
                return getattr(self.client, method)(*args, **kwargs)
            except Exception as error:
                if _is_timeout(error):
                    self.reset_client()
                    raise TritonUnavailableError(
                        f"Triton server {self.options.display} did not answer {what} within {self.options.timeout_s:g} s "
                        f"(triton timeout); is it overloaded or unreachable? ({error})"
                    ) from error
                if not _is_unreachable(error):
                    raise TritonServerError(f"Triton server {self.options.display} rejected {what}: {error}") from error
                self.reset_client()
                if attempt == 2:
                    raise TritonUnavailableError(
                        f"Triton server {self.options.display} is unreachable ({what}): {error}. "
                        "Check that tritonserver runs there and the address/port/protocol are right."
                    ) from error
        raise AssertionError("unreachable")

    def check_models(self) -> None:
        """Server and every graph model ready, serving this model's weights; records each model's inputs."""
        missing, foreign = [], []
        for name in self.served_models:
            if not self._call(f"the readiness check of model {name!r}", "is_model_ready", name):
                missing.append(name)
                continue
            config = self._call(f"the configuration of {name!r}", "get_model_config", name, **self._as_json())
            config = config.get("config", config)
            served = config.get("parameters", {}).get(FINGERPRINT_PARAMETER, {}).get("string_value")
            if self.fingerprint is not None and served != self.fingerprint:
                foreign.append(f"{name} (serves {str(served)[:16]}, this model is {self.fingerprint[:16]})")
            metadata = self._call(f"the metadata of {name!r}", "get_model_metadata", name, **self._as_json())
            self.model_inputs[name] = [tensor["name"] for tensor in metadata["inputs"]]
        if missing:
            raise TritonServerError(
                f"Triton server {self.options.display} has no ready model(s) {missing} of the X-SAM models "
                f"{list(self.served_models)}; serve the repository written by `python -m xsam_engine.export --triton-repository DIR` "
                "(tritonserver --model-repository DIR) and check the server log for load errors."
            )
        if foreign:
            raise TritonServerError(
                f"Triton server {self.options.display} serves graphs of other weights: {foreign}; re-export this model "
                "with `python -m xsam_engine.export --model <this model> --triton-repository DIR` and reload the server."
            )
        self._checked = True

    @property
    def served_models(self) -> tuple[str, ...]:
        return GRAPH_NAMES + ((FRAME_MODEL,) if self.options.frame_ensemble else ())

    def _as_json(self) -> dict:
        return {"as_json": True} if self.options.protocol == "grpc" else {}

    # -- inference -----------------------------------------------------------------------------

    # -- frame mode (the `xsam_frame` ensemble) --------------------------------------------------

    def encode_mask_image(self, pixel_values: torch.Tensor) -> MaskEncoderOutput:
        if not self.options.frame_ensemble:
            return super().encode_mask_image(pixel_values)
        return RemoteMaskEncoderOutput(projector_input=None, multi_scale_features=(), pixel_values=pixel_values)

    def encode_pixels(self, mask_output: MaskEncoderOutput) -> PixelDecoderOutput:
        pixels = getattr(mask_output, "pixel_values", None)
        if pixels is None:
            return super().encode_pixels(mask_output)
        return RemotePixelFeatures(mask_features=None, multi_scale_features=(), pixel_values=pixels)

    def sam_tokens(self, mask_output: MaskEncoderOutput) -> torch.Tensor:
        pixels = getattr(mask_output, "pixel_values", None)
        if pixels is not None and mask_output.sam_tokens is None:  # a command on this frame: fetch them once
            mask_output.sam_tokens = self.run_graph("mask_encoder", outputs=("sam_tokens",), pixel_values=pixels)[0]
        return super().sam_tokens(mask_output)

    def decode(
        self, pixel_features: PixelDecoderOutput, condition_embeds: torch.Tensor, seg_embeds: torch.Tensor
    ) -> SegDecoderOutput:
        pixels = getattr(pixel_features, "pixel_values", None)
        if pixels is None:
            return super().decode(pixel_features, condition_embeds, seg_embeds)
        class_logits, mask_logits = self.run_graph(
            FRAME_MODEL, pixel_values=pixels, condition_embeds=condition_embeds, seg_embeds=seg_embeds
        )
        return SegDecoderOutput(class_logits=class_logits, mask_logits=mask_logits)

    # -- inference -----------------------------------------------------------------------------

    def run_graph(self, name: str, outputs: tuple[str, ...] | None = None, **inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run one graph (or `xsam_frame`) on the server, or on the fallback while it is unreachable.

        `outputs`: names of the outputs to fetch (default: all, in the spec's order).
        """
        if self.fallback is not None and self.using_fallback and time.monotonic() < self._retry_at:
            return self._run_locally(name, outputs, inputs)
        try:
            if not self._checked:  # a fallback start with the server down: check on first contact
                self.check_models()
            results = self._infer(name, inputs, outputs)
        except TritonUnavailableError as error:
            self.last_error = str(error)
            if self.fallback is None:
                raise
            self._use_fallback(error)
            return self._run_locally(name, outputs, inputs)
        if self.using_fallback:
            logger.warning("Triton server %s is back; image stages run there again.", self.options.display)
        self.using_fallback, self.last_error = False, None
        return results

    def _run_locally(self, name: str, outputs: tuple[str, ...] | None, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        fallback = self.fallback
        if name == FRAME_MODEL:
            pixel_features = fallback.encode_pixels(fallback.encode_mask_image(inputs["pixel_values"]))
            decoded = fallback.decode(pixel_features, inputs["condition_embeds"], inputs["seg_embeds"])
            results = [decoded.class_logits, decoded.mask_logits]
        else:
            results = fallback.run_graph(name, **inputs)
        names = self.specs[name].output_names
        return [results[names.index(n)] for n in outputs] if outputs else results

    def _use_fallback(self, error: Exception) -> None:
        self.last_error = str(error)
        if not self.using_fallback:
            logger.warning("%s Running the image stages locally until it is back (triton_fallback).", error)
        self.using_fallback = True
        self._retry_at = time.monotonic() + self.options.retry_interval_s

    def _infer(self, name: str, inputs: dict[str, torch.Tensor], outputs: tuple[str, ...] | None = None) -> list[torch.Tensor]:
        if self.options.protocol == "grpc":
            import tritonclient.grpc as protocol
        else:
            import tritonclient.http as protocol
        spec = self.specs[name]
        wanted = self.model_inputs.get(name, spec.input_names)
        infer_inputs = []
        for input_name in wanted:
            array = inputs[input_name].detach().to("cpu", torch.float32).contiguous().numpy()
            tensor = protocol.InferInput(input_name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array)
            infer_inputs.append(tensor)
        names = list(outputs or spec.output_names)
        requested = [protocol.InferRequestedOutput(n) for n in names]
        result = self._call(f"model {name!r}", "infer", name, infer_inputs, outputs=requested)
        return [torch.from_numpy(np.array(result.as_numpy(n))).to(self.device, self.dtype) for n in names]

    def close(self) -> None:
        self.reset_client()
