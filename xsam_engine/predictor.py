"""`XSamPredictor`: encode an image once, segment it for many requests, re-apply conditions to new frames."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from . import postprocessing
from .modeling_outputs import MaskEncoderOutput, PixelDecoderOutput, SegDecoderOutput
from .modeling_xsam import XSamModel
from .processing import SamInputs, XSamImageProcessor, prompt_mask_to_original, validate_rgb_image
from .prompts import chat_prompt, has_template_answer, question_for, template_answer
from .requests import SegmentationRequest, Task
from .results import Condition, SegmentationResult
from .timing import StageTimer
from .tokenization import SpecialTokenIds, add_xsam_tokens, clean_generated_text, encode_with_placeholders, gcg_caption
from .visual_prompts import rasterise_prompt

logger = logging.getLogger(__name__)


class ImageStages(Protocol):
    """The per-image stages a backend can accelerate; `XSamModel` implements them in PyTorch."""

    def encode_mask_image(self, pixel_values: torch.Tensor) -> MaskEncoderOutput: ...

    def encode_pixels(self, mask_output: MaskEncoderOutput) -> PixelDecoderOutput: ...

    def encode_vision(self, pixel_values: torch.Tensor) -> torch.Tensor: ...

    def sam_tokens(self, mask_output: MaskEncoderOutput) -> torch.Tensor: ...

    def llm_image_tokens(self, siglip_pixel_values: torch.Tensor, mask_output: MaskEncoderOutput) -> torch.Tensor: ...

    def encode_regions(
        self, sam_tokens: torch.Tensor, prompt_masks: list[torch.Tensor], generator: torch.Generator | None = None
    ) -> torch.Tensor: ...

    def decode(
        self, pixel_features: PixelDecoderOutput, condition_embeds: torch.Tensor, seg_embeds: torch.Tensor
    ) -> SegDecoderOutput: ...


class XSamPredictor:
    """Runs X-SAM on one image at a time, in the spirit of `segment_anything.SamPredictor`.

    `set_image` runs the text-independent stages (SAM encoder, connector, pixel decoder) once;
    the SigLIP encoder and seg projector run lazily, only when a request needs the LLM.
    `segment(request)` = `encode_request` (LLM -> `Condition`) + `decode` (mask decoder +
    post-processing). `decode(condition)` on a new image is tracking: no LLM, no SigLIP.
    """

    def __init__(
        self, model: XSamModel, tokenizer: PreTrainedTokenizerBase, seed: int = 0, stages: ImageStages | None = None
    ) -> None:
        """Args:
            model: a built model (the language model and region encoder always run from it).
            tokenizer: the model's tokenizer; X-SAM's tokens are added if missing.
            seed: seed of the region sampler's point draw (deterministic results per request).
            stages: optional accelerated implementation of the image stages (`ImageStages`: SAM
                encoder, pixel decoder, SigLIP + seg projector tokens, region sampler, mask
                decoder), e.g. ONNX Runtime or TensorRT engines; defaults to the PyTorch model.
                The language model always runs from `model`.
        """
        self.model = model.eval()
        self.stages: ImageStages = stages if stages is not None else model
        self.tokenizer = tokenizer
        self.special: SpecialTokenIds = add_xsam_tokens(tokenizer)
        vocab_rows = model.config.language.vocab_size
        if len(tokenizer) > vocab_rows:
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens but the model's embedding has {vocab_rows} rows; "
                "use the tokenizer saved with the model."
            )
        self.processor = XSamImageProcessor(model.config.vision, model.config.mask_encoder)
        self.seed = seed
        self.reset_image()

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, device: str = "auto", dtype: torch.dtype | None = None, seed: int = 0
    ) -> XSamPredictor:
        """Load a model saved by `save_pretrained` (`None` = the shipped tabletop demo model) with
        PyTorch image stages: `create_predictor(path, backend="torch", ...)`, whose defaults these are
        (device "auto" = CUDA when available, dtype = bf16/fp16 on CUDA, fp32 on the CPU)."""
        from .backends import create_predictor

        return create_predictor(path, backend="torch", device=device, dtype=dtype, seed=seed, log=False).predictor

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def is_image_set(self) -> bool:
        return self._sam_inputs is not None

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) of the current image, or None."""
        return None if self._sam_inputs is None else self._sam_inputs.original_size

    def reset_image(self) -> None:
        """Forget the current image and every feature cached for it."""
        self._image: np.ndarray | None = None
        self._sam_inputs: SamInputs | None = None
        self._mask_output: MaskEncoderOutput | None = None
        self._pixel_features: PixelDecoderOutput | None = None
        self._llm_image_tokens: torch.Tensor | None = None
        self._image_timings: dict[str, float] = {}

    @torch.inference_mode()
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Encode an (H, W, 3) uint8 image; `image_format` is "RGB" or "BGR"."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}.")
        image = validate_rgb_image(image)
        if image_format == "BGR":
            image = np.ascontiguousarray(image[..., ::-1])
        self.reset_image()
        timer = StageTimer(self.device)
        with timer.stage("preprocess"):
            sam_inputs = self.processor.sam_inputs(image)
        with timer.stage("mask_encoder"):
            mask_output = self.stages.encode_mask_image(sam_inputs.pixel_values.to(self.device))
        with timer.stage("pixel_decoder"):
            pixel_features = self.stages.encode_pixels(mask_output)
        self._image, self._sam_inputs = image, sam_inputs
        self._mask_output, self._pixel_features = mask_output, pixel_features
        self._image_timings = timer.seconds

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before segmenting.")

    def _image_tokens(self, timer: StageTimer) -> torch.Tensor:
        """(N_siglip + N_sam, H) LLM image tokens of the current image, computed on first use."""
        if self._llm_image_tokens is None:
            with timer.stage("vision_encoder"):
                siglip_pixels = self.processor.siglip_inputs(self._image).to(self.device)
                self._llm_image_tokens = self.stages.llm_image_tokens(siglip_pixels, self._mask_output)[0]
        return self._llm_image_tokens

    @torch.inference_mode()
    def segment(self, request: SegmentationRequest) -> SegmentationResult:
        """Run the language model for `request` on the current image, then decode its masks."""
        timer = StageTimer(self.device)
        condition = self._encode_request(request, timer)
        result = self._decode(condition, timer)
        result.timings = {**self._image_timings, **timer.seconds}
        return result

    @torch.inference_mode()
    def encode_request(self, request: SegmentationRequest) -> Condition:
        """Only the language-model part: the condition that `decode` applies to any image."""
        return self._encode_request(request, StageTimer(self.device))

    @torch.inference_mode()
    def decode(self, condition: Condition, **overrides: float | None) -> SegmentationResult:
        """Apply a condition to the current image without the LLM (tracking).

        `overrides` may set `score_threshold` / `mask_threshold` / `overlap_threshold` for this
        call (None = the model's default; checked like a request's).
        """
        if overrides:
            condition = replace(condition, request=replace(condition.request, **overrides))
        timer = StageTimer(self.device)
        result = self._decode(condition, timer)
        result.timings = {**self._image_timings, **timer.seconds}
        return result

    # -- request -> condition ------------------------------------------------------------------

    def prompt_ids(self, request: SegmentationRequest) -> list[int]:
        """Token ids of the user turn for `request`, `<image>` / `<region>` as -200 / -300 placeholders.

        Starts with the tokenizer's BOS id when the model's `XSamLanguageConfig.add_bos` is set (X-SAM's
        training and evaluation form, official `encode_fn(next_needs_bos_token=True)`).
        """
        language = self.model.config.language
        question = question_for(request.task, request.text, request.vocabulary, len(request.regions), language.template_index)
        return encode_with_placeholders(self.tokenizer, chat_prompt(question), add_bos=language.add_bos)

    def _rasterise_regions(self, request: SegmentationRequest) -> tuple[list[torch.Tensor], list[np.ndarray]]:
        """The request's visual prompts on the padded model input and back at the original size.

        Returns:
            padded: per region, (S, S) bool on the padded SAM input (the region sampler's input),
                rasterised at the original resolution and NEAREST-resized (`XSamImageProcessor.prompt_mask`).
            seen: per region, (H, W) bool, `padded` cropped and resized back (`prompt_mask_to_original`):
                the prompt that X-SAM's interactive / VGD post-processing matches candidates to.
        Raises:
            ValueError: a prompt covers no pixel of the image.
        """
        height, width = self._sam_inputs.original_size
        scaled_size = self._sam_inputs.scaled_size
        padded, seen = [], []
        for index, region in enumerate(request.regions):
            mask = rasterise_prompt(region, height, width)
            if not mask.any():
                raise ValueError(f"Visual prompt {index} covers no pixel of the {width}x{height} image.")
            on_input = self.processor.prompt_mask(mask, scaled_size)  # never empty for a non-empty prompt
            padded.append(on_input)
            seen.append(prompt_mask_to_original(on_input, scaled_size, (height, width)))
        return padded, seen

    def _encode_request(self, request: SegmentationRequest, timer: StageTimer) -> Condition:
        self._require_image()
        prompt_masks: list[np.ndarray] = []
        region_tokens = None
        image_tokens = self._image_tokens(timer)
        with timer.stage("prompt"):
            if request.task.uses_regions:
                padded, prompt_masks = self._rasterise_regions(request)
                generator = torch.Generator().manual_seed(self.seed)
                region_tokens = self.stages.encode_regions(
                    self.model.sam_part(image_tokens), [mask.to(self.device) for mask in padded], generator)
            prompt_ids = self.prompt_ids(request)
        with timer.stage("llm"):
            if request.generate or not has_template_answer(request.task):
                output = self.model.generate_conditions(
                    prompt_ids, image_tokens, self.special, region_tokens, request.max_new_tokens,
                    single_seg=not request.task.uses_text)  # X-SAM: one <SEG> per answer but referring
            else:
                # X-SAM's evaluation form: zero decode steps. The answer template is placed after
                # the prompt (teacher forcing) and one forward pass yields the <SEG> state; tokens
                # after <SEG> cannot change it (causal), so the template stops there.
                answer_ids = self.tokenizer.encode(
                    template_answer(request.task, self.model.config.language.template_index), add_special_tokens=False)
                answer_ids = answer_ids[: answer_ids.index(self.special.seg) + 1]
                output = self.model.get_conditions([prompt_ids + answer_ids], [image_tokens], self.special,
                                                   None if region_tokens is None else [region_tokens])
        text, labels = self._answer_text(request, output)
        return Condition(
            request=request,
            condition_embeds=output.condition_embeds[0][output.condition_mask[0]],
            seg_embeds=output.seg_embeds[:1] if bool(output.seg_found[0]) else output.seg_embeds[:0],
            labels=labels,
            text=text,
            prompt_masks=tuple(prompt_masks),
        )

    def _answer_text(self, request: SegmentationRequest, output) -> tuple[str, tuple[str, ...]]:
        """(text, condition labels): the demo's cleaned answer text (GCG: the caption) and, for GCG,
        the phrases between the answer's `<p>` and `</p>` (official `get_gcg_phrases`)."""
        if not output.output_ids:
            return "", request.labels
        output_ids, prompt_length = output.output_ids[0], output.prompt_lengths[0]
        raw_text = self.tokenizer.decode(output_ids, skip_special_tokens=False)
        if request.task is not Task.GCG:
            return clean_generated_text(raw_text, keep_phrase_tags=False), request.labels
        phrases = tuple(
            self.tokenizer.decode(output_ids[start - prompt_length + 1 : end - prompt_length]).strip()
            for start, end in output.spans[0] if start >= prompt_length
        )
        return gcg_caption(clean_generated_text(raw_text, keep_phrase_tags=True)), phrases

    # -- condition -> result -------------------------------------------------------------------

    def _decode(self, condition: Condition, timer: StageTimer) -> SegmentationResult:
        self._require_image()
        request = condition.request
        height, width = self._sam_inputs.original_size
        thresholds = request.thresholds(self.model.config.postprocess.thresholds_for(request.task))
        result = SegmentationResult(
            task=request.task, instances=[], labels=condition.labels, image_size=(height, width), text=condition.text,
            condition=condition, thresholds=thresholds,
        )
        if condition.seg_embeds.shape[0] == 0 or condition.condition_embeds.shape[0] == 0:
            result.message = ("not found: the language model's answer has no <SEG> token" if condition.seg_embeds.shape[0] == 0
                              else "not found: the answer names no phrase to segment")
            return result
        with timer.stage("decoder"):
            output = self.stages.decode(
                self._pixel_features, condition.condition_embeds[None].to(self.model.dtype), condition.seg_embeds[:1]
            )
        geometry = postprocessing.ImageGeometry(
            input_size=self.processor.sam_size, scaled_size=self._sam_inputs.scaled_size, original_size=(height, width)
        )
        with timer.stage("postprocess"):
            processed = postprocessing.postprocess(
                request.task, output.class_logits[0], output.mask_logits[0], geometry, condition.labels, thresholds,
                stuff_labels=request.stuff_indices, prompt_masks=condition.prompt_masks,
            )
        result.instances, result.message = processed.instances, processed.message
        result.semantic_map, result.panoptic_map = processed.semantic_map, processed.panoptic_map
        return result
