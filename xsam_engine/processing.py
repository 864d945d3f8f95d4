"""Image and visual-prompt preprocessing for both encoders (spec section 2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from .configuration_xsam import XSamMaskEncoderConfig, XSamVisionConfig

MAX_IMAGE_SIDE = 8192


@dataclass(frozen=True, eq=False)
class SamInputs:
    """SAM-branch input of one image.

    Attributes:
        pixel_values: (1, 3, S, S) float32, resized (longest side S), normalised, zero-padded bottom/right.
        original_size: (H, W) of the caller's image.
        scaled_size: (h', w') of the resized image inside the padded square.
    """

    pixel_values: torch.Tensor
    original_size: tuple[int, int]
    scaled_size: tuple[int, int]


def validate_rgb_image(image: np.ndarray) -> np.ndarray:
    """Check an (H, W, 3) uint8 image; raise ValueError saying what is wrong otherwise."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"Expected a numpy array of shape (H, W, 3), got {type(image).__name__}.")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"Expected an RGB image of shape (H, W, 3), got shape {image.shape}.")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"The image is empty ({width}x{height}).")
    if max(height, width) > MAX_IMAGE_SIDE:
        raise ValueError(f"The image is {width}x{height}; the largest side supported is {MAX_IMAGE_SIDE} pixels.")
    if image.dtype != np.uint8:
        raise ValueError(f"Expected uint8 pixels, got {image.dtype}.")
    return np.ascontiguousarray(image)


def scaled_size_for(original_size: tuple[int, int], target: int) -> tuple[int, int]:
    """Longest side to `target`, sizes rounded as `int(x + 0.5)` (SAM's processor), each at least 1 px.

    SAM's ``ResizeLongestSide.get_preprocess_shape`` rounds the short side of a very elongated
    image to 0 (3012x5 at S=256 -> 0.42 px); no image library can resize to 0 rows, so every
    side is clamped to >= 1 px (3012x5 -> 256x1). The rounding of every other size is unchanged.
    """
    height, width = original_size
    if height <= 0 or width <= 0:
        raise ValueError(f"The image is empty ({width}x{height}).")
    scale = target / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def _normalise(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    array = (pixels.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


class XSamImageProcessor:
    """Prepares SAM and SigLIP inputs and rasterised prompt masks for one model configuration."""

    def __init__(self, vision_config: XSamVisionConfig, mask_config: XSamMaskEncoderConfig) -> None:
        self.vision_config = vision_config
        self.mask_config = mask_config

    @property
    def sam_size(self) -> int:
        return self.mask_config.image_size

    def sam_inputs(self, image: np.ndarray) -> SamInputs:
        """Resize with PIL bilinear (antialiased when shrinking) on uint8, normalise, then pad with 0."""
        image = validate_rgb_image(image)
        original_size = (image.shape[0], image.shape[1])
        scaled = scaled_size_for(original_size, self.sam_size)
        resized = np.asarray(Image.fromarray(image).resize((scaled[1], scaled[0]), Image.BILINEAR))
        normalised = _normalise(resized, self.mask_config.image_mean, self.mask_config.image_std)
        padded = torch.zeros(3, self.sam_size, self.sam_size)
        padded[:, : scaled[0], : scaled[1]] = normalised
        return SamInputs(pixel_values=padded[None], original_size=original_size, scaled_size=scaled)

    def siglip_inputs(self, image: np.ndarray) -> torch.Tensor:
        """Optional grey pad to square, PIL bilinear resize to the SigLIP size, normalise -> (1, 3, s, s)."""
        image = validate_rgb_image(image)
        if self.vision_config.pad_to_square:
            height, width = image.shape[:2]
            side = max(height, width)
            canvas = np.full((side, side, 3), 127, dtype=np.uint8)
            top, left = (side - height) // 2, (side - width) // 2
            canvas[top : top + height, left : left + width] = image
            image = canvas
        size = self.vision_config.image_size
        resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
        return _normalise(resized, self.vision_config.image_mean, self.vision_config.image_std)[None]

    def prompt_mask(self, mask: np.ndarray, scaled_size: tuple[int, int]) -> torch.Tensor:
        """(H, W) bool prompt mask -> (S, S) bool on the padded SAM input (NEAREST resize, pad False).

        Nearest sampling takes one source pixel per target pixel, so a prompt narrower than the
        sampling step (a click on a 3012x5 image resized to 64x1) can fall between the samples and
        vanish. A non-empty prompt never becomes empty: in that case the target pixels whose
        source cells contain prompt pixels are set instead. Prompts that survive nearest sampling
        are resized exactly as before.
        """
        mask = np.asarray(mask, dtype=bool)
        resized = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(
            (scaled_size[1], scaled_size[0]), Image.NEAREST)) > 0
        if not resized.any() and mask.any():
            rows, cols = np.nonzero(mask)
            resized = np.zeros(scaled_size, dtype=bool)
            resized[rows * scaled_size[0] // mask.shape[0], cols * scaled_size[1] // mask.shape[1]] = True
        padded = torch.zeros(self.sam_size, self.sam_size, dtype=torch.bool)
        padded[: scaled_size[0], : scaled_size[1]] = torch.from_numpy(resized)
        return padded


def prompt_mask_to_original(
    padded: torch.Tensor, scaled_size: tuple[int, int], original_size: tuple[int, int]
) -> np.ndarray:
    """(S, S) bool prompt on the padded model input -> (H, W) bool, as X-SAM's post-processing sees it.

    Crop to the scaled image (h', w'), then nearest resize to (H, W) with torch's "nearest"
    (source index floor(dst * in / out)): the official `sem_seg_postprocess(vprompt_mask, scaled_size,
    H, W, mode="nearest")` in `intseg_process_fn.py` / `vgdseg_process_fn.py` (AAAI26_Archive).
    With `XSamImageProcessor.prompt_mask` this is the round trip the image takes, so candidates are
    matched to the prompt the model saw, not to the original-resolution drawing.
    """
    cropped = padded[: scaled_size[0], : scaled_size[1]].float()[None, None]
    return (F.interpolate(cropped.cpu(), size=original_size, mode="nearest")[0, 0] > 0).numpy()
