"""INT8 calibration data from generated tabletop scenes, a TensorRT entropy calibrator, and the
optional NVIDIA ModelOpt (INT8 / FP8 Q/DQ) path.

`calibration_batches(model, graph, ...)` yields, for each of `num_scenes` scenes from
`xsam_engine.tabletop.scenes.generate_scene`, the exact named inputs of one exported graph:
the preprocessed image for the encoders, and for the decoders the PyTorch model's upstream
outputs on that image (so the decoders are calibrated on realistic activations). It needs no
TensorRT and is tested on the CPU. The mask decoder's condition/<SEG> inputs come from the LLM
at run time; calibration uses Gaussian vectors with the spread of the learned background
embedding (they only reach FP32-pinned cosine logits and the query content).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from ..export.graphs import graph_specs
from ..modeling_xsam import XSamModel
from ..processing import XSamImageProcessor
from ..tabletop.scenes import generate_scene

logger = logging.getLogger(__name__)

CALIBRATED_GRAPHS = ("mask_encoder", "vision_encoder", "pixel_decoder", "mask_decoder")
DEFAULT_NUM_SCENES = 64
DEFAULT_CONDITIONS = 8


def calibration_id(num_scenes: int, seed: int, width: int, height: int) -> str:
    """Names the calibration set in the engine cache key (a different set => a different engine)."""
    return f"tabletop-n{num_scenes}-s{seed}-{width}x{height}"


@torch.no_grad()
def calibration_batches(
    model: XSamModel,
    graph: str,
    num_scenes: int = DEFAULT_NUM_SCENES,
    seed: int = 0,
    width: int = 640,
    height: int = 480,
    num_conditions: int = DEFAULT_CONDITIONS,
) -> Iterator[dict[str, torch.Tensor]]:
    """Named float32 CPU inputs of `graph`, one dict per generated scene."""
    if graph not in CALIBRATED_GRAPHS:
        raise ValueError(f"INT8 calibration covers {CALIBRATED_GRAPHS}, not {graph!r}.")
    config = model.config
    processor = XSamImageProcessor(config.vision, config.mask_encoder)
    spec = graph_specs(config)[graph]
    generator = torch.Generator().manual_seed(seed)
    for index in range(num_scenes):
        image = generate_scene(seed + index, width=width, height=height).image
        if graph == "vision_encoder":
            yield {"pixel_values": processor.siglip_inputs(image)}
            continue
        pixels = processor.sam_inputs(image).pixel_values
        if graph == "mask_encoder":
            yield {"pixel_values": pixels}
            continue
        mask_output = model.encode_mask_image(pixels.to(model.device))
        pyramid = [t.float().cpu() for t in mask_output.multi_scale_features]
        if graph == "pixel_decoder":
            yield {name: tensor for name, tensor in zip(spec.input_names, pyramid)}
            continue
        pixel_features = model.encode_pixels(mask_output)
        spread = float(model.seg_decoder.background_embedding.weight.float().std()) or 1.0
        hidden = config.decoder.hidden_dim
        yield {
            "mask_features": pixel_features.mask_features.float().cpu(),
            **{f"level_{i}": t.float().cpu() for i, t in enumerate(pixel_features.multi_scale_features)},
            "condition_embeds": torch.randn(1, num_conditions, hidden, generator=generator) * spread,
            "seg_embeds": torch.randn(1, hidden, generator=generator) * spread,
        }


def make_entropy_calibrator(batches: Iterable[dict[str, torch.Tensor]], cache_file: str | Path, device: int = 0):
    """A `tensorrt.IInt8EntropyCalibrator2` over `batches` (batch size 1), caching its table in `cache_file`.

    The calibration table is reused on rebuilds (e.g. after a TensorRT upgrade), which skips the
    slow calibration passes.
    """
    import tensorrt as trt

    cache_path = Path(cache_file)

    class TabletopEntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(batches)
            self._device_buffers: dict[str, torch.Tensor] = {}
            self.count = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names, *args):
            try:
                batch = next(self._batches)
            except StopIteration:
                return None
            # Keep the device tensors alive until the next call: TensorRT reads them asynchronously.
            self._device_buffers = {n: batch[n].to(f"cuda:{device}", torch.float32).contiguous() for n in names}
            self.count += 1
            if self.count % 8 == 0:
                logger.info("INT8 calibration: %d batches", self.count)
            return [int(self._device_buffers[n].data_ptr()) for n in names]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_bytes(bytes(memoryview(cache)))

    return TabletopEntropyCalibrator()


def quantize_with_modelopt(
    onnx_path: str | Path,
    output_path: str | Path,
    batches: Iterable[dict[str, torch.Tensor]],
    mode: str = "int8",
) -> Path:
    """Optional path: insert explicit Q/DQ nodes with NVIDIA ModelOpt (`pip install nvidia-modelopt[onnx]`).

    `mode` is "int8" (Orin and any GPU) or "fp8" (Ada/Hopper, e.g. H100). Build the result with
    `EngineOptions(enable_fp16=True, enable_int8=mode == "int8", enable_fp8=mode == "fp8")`; the
    explicit scales then replace calibration. ModelOpt is not a dependency of this package.
    """
    if mode not in ("int8", "fp8"):
        raise ValueError(f"mode must be 'int8' or 'fp8', got {mode!r}.")
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as error:
        raise ImportError("quantize_with_modelopt needs NVIDIA ModelOpt: pip install 'nvidia-modelopt[onnx]'.") from error
    collected: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        for name, tensor in batch.items():
            collected.setdefault(name, []).append(tensor.numpy())
    calibration_data = {name: np.concatenate(arrays) for name, arrays in collected.items()}
    quantize(
        onnx_path=str(onnx_path), quantize_mode=mode, calibration_data=calibration_data, output_path=str(output_path)
    )
    return Path(output_path)


def calibration_fingerprint(batches: Iterable[dict[str, torch.Tensor]]) -> str:
    """SHA-256 of a batch stream (to prove two calibration sets are identical, e.g. in tests)."""
    digest = hashlib.sha256()
    for batch in batches:
        for name in sorted(batch):
            digest.update(name.encode())
            digest.update(batch[name].numpy().tobytes())
    return digest.hexdigest()
