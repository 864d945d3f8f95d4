"""X-SAM configuration: one dataclass per component, nested in `XSamConfig`.

Defaults are exactly the released checkpoint (`hao9610/X-SAM`, Phi-3-mini + SigLIP2-so400m +
SAM-ViT-L + Mask2Former decoder; spec section 1). `XSamConfig.tiny()` is the small
configuration for tests; `XSamConfig.tabletop()` the shipped demo model's architecture.
Derived sizes (token counts, feature channels) are computed here once.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import Mask2FormerConfig, Phi3Config, SamVisionConfig, SiglipVisionConfig

from .requests import Task, Thresholds, check_threshold


@dataclass
class XSamVisionConfig:
    """SigLIP2 vision tower + `visual_projector` (image tokens for the LLM).

    Attributes:
        select_layer: hidden-state index fed to the projector (-2 = output of the penultimate
            layer, before `post_layernorm`); only the layers up to it are built.
        projector_depth: Linear layers in the projector (2 = Linear, GELU, Linear).
        pad_to_square: centre the image on a grey square before resizing (released eval/demo).
    """

    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 27
    num_attention_heads: int = 16
    image_size: int = 384
    patch_size: int = 14
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"
    select_layer: int = -2
    pad_to_square: bool = True
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def used_layers(self) -> int:
        """Encoder layers that run: hidden_states[select_layer] is the output of this many layers."""
        return self.num_hidden_layers + 1 + self.select_layer if self.select_layer < 0 else self.select_layer

    def siglip_config(self) -> SiglipVisionConfig:
        return SiglipVisionConfig(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.used_layers,
            num_attention_heads=self.num_attention_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            layer_norm_eps=self.layer_norm_eps,
            hidden_act=self.hidden_act,
            vision_use_head=False,
        )


@dataclass
class XSamMaskEncoderConfig:
    """SAM ViT image encoder + `seg_projector` (SAM tokens for the LLM) + `seg_connector` (pyramid).

    Attributes:
        projector_select_layer: hidden-state index of the SAM blocks fed to the seg projector
            (-2 = output of the second-to-last block; index 0 is the patch embedding).
        projector_downsample_ratio: pixel-shuffle ratio before the seg projector (0.5: 2x2 -> 1 token).
        connector_select_layers: 1-based block outputs feeding the pyramid levels.
        connector_scale_factors: pixel-shuffle scale per level (2 = upsample, 0.5 = downsample).
        connector_hidden_dim: channels inside each connector level.
    """

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    mlp_dim: int = 4096
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (5, 11, 17, 23)
    layer_norm_eps: float = 1e-6
    attn_implementation: str = "eager"
    projector_select_layer: int = -2
    projector_downsample_ratio: float = 0.5
    connector_select_layers: tuple[int, ...] = (12, 18, 24)
    connector_scale_factors: tuple[float, ...] = (2.0, 1.0, 0.5)
    connector_hidden_dim: int = 512
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def projector_block(self) -> int:
        """1-based block whose output feeds the seg projector."""
        index = self.projector_select_layer
        return self.num_hidden_layers + 1 + index if index < 0 else index

    @property
    def num_tokens(self) -> int:
        return int(self.grid_size * self.projector_downsample_ratio) ** 2

    @property
    def projector_input_dim(self) -> int:
        return int(self.hidden_size / self.projector_downsample_ratio**2)

    @property
    def feature_channels(self) -> list[int]:
        """Channels of the pyramid levels, highest resolution first (released: 512, 1024, 2048)."""
        return [int(self.hidden_size / scale) for scale in self.connector_scale_factors]

    @property
    def feature_sizes(self) -> list[int]:
        return [int(self.grid_size * scale) for scale in self.connector_scale_factors]

    def sam_config(self) -> SamVisionConfig:
        config = SamVisionConfig(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            mlp_dim=self.mlp_dim,
            image_size=self.image_size,
            patch_size=self.patch_size,
            window_size=self.window_size,
            global_attn_indexes=list(self.global_attn_indexes),
            layer_norm_eps=self.layer_norm_eps,
        )
        config._attn_implementation = self.attn_implementation
        return config


@dataclass
class XSamLanguageConfig:
    """Phi-3 LLM, X-SAM's special tokens and the `llm_projector` to the condition space.

    Attributes:
        vocab_size: rows of the (resized) embedding and LM head, including `<SEG>`, `<p>`, `</p>`.
        condition_dim: output width of the `llm_projector` (= decoder hidden size).
        bos_token_id / eos_token_id / pad_token_id: Phi-3's ids; None for models with their own
            tokenizer (generation stops on the tokenizer's ids either way).
        add_bos: prepend the tokenizer's BOS token to the prompt. X-SAM trains and evaluates with it
            (official `encode_fn(..., next_needs_bos_token=True)`, `xsam/xsam/dataset/utils/encode.py`);
            only its demo (`demo.py`, `next_needs_bos_token=False`) leaves it out. A model must run
            with the form it was trained with: True for the released weights, False for the shipped
            tabletop model (trained without; its config.json says so).
        template_index: which official question/answer template to use (fixed for determinism).
    """

    vocab_size: int = 32014
    hidden_size: int = 3072
    intermediate_size: int = 8192
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    sliding_window: int | None = 2047
    bos_token_id: int | None = 1
    eos_token_id: int | None = 32000
    pad_token_id: int | None = 32000
    attn_implementation: str = "sdpa"
    condition_dim: int = 256
    add_bos: bool = True
    template_index: int = 0

    def phi3_config(self) -> Phi3Config:
        config = Phi3Config(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            max_position_embeddings=self.max_position_embeddings,
            original_max_position_embeddings=self.max_position_embeddings,
            rope_theta=self.rope_theta,
            rms_norm_eps=self.rms_norm_eps,
            sliding_window=self.sliding_window,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            tie_word_embeddings=False,
        )
        config._attn_implementation = self.attn_implementation
        return config


@dataclass
class XSamDecoderConfig:
    """Mask2Former pixel decoder + masked-attention transformer decoder + open-set class head.

    Attributes:
        decoder_layers: Mask2Former's count: the decoder has `decoder_layers - 1` layers and
            `decoder_layers` prediction stages.
        logit_scale_init: initial value of the learned log temperature, ln(1 / 0.07).
        logit_clamp: class logits are clamped to [-logit_clamp, logit_clamp] ([A]: 500).
    """

    hidden_dim: int = 256
    num_queries: int = 200
    decoder_layers: int = 10
    encoder_layers: int = 6
    num_attention_heads: int = 8
    dim_feedforward: int = 2048
    encoder_feedforward_dim: int = 1024
    feature_strides: tuple[int, ...] = (4, 8, 16, 32)
    common_stride: int = 4
    logit_scale_init: float = math.log(1 / 0.07)
    logit_clamp: float = 500.0

    def mask2former_config(self) -> Mask2FormerConfig:
        return Mask2FormerConfig(
            hidden_dim=self.hidden_dim,
            feature_size=self.hidden_dim,
            mask_feature_size=self.hidden_dim,
            num_queries=self.num_queries,
            decoder_layers=self.decoder_layers,
            encoder_layers=self.encoder_layers,
            num_attention_heads=self.num_attention_heads,
            dim_feedforward=self.dim_feedforward,
            encoder_feedforward_dim=self.encoder_feedforward_dim,
            feature_strides=list(self.feature_strides),
            common_stride=self.common_stride,
            dropout=0.0,
            use_auxiliary_loss=False,
        )


@dataclass
class XSamPostProcessConfig:
    """Default post-processing thresholds of a model (a request or the node may override them).

    Score scales differ between models, so the defaults belong to the model. The released
    configuration uses 0.5 everywhere: the official demo's `--score_thr` default, which it
    forwards to every post-processor (spec section 8). For referring and reasoning the class
    softmax is over {phrase, background}, so 0.5 is where "no object" becomes the likelier
    answer; the official refseg post-processing ignores the threshold (always the best mask),
    which a score threshold of 0 reproduces. `mask_threshold` 0.5 and `overlap_threshold` 0.8
    are the official post-processing defaults.

    Attributes:
        score_threshold: default score threshold of every task, in [0, 1].
        task_score_thresholds: per-task overrides, keyed by `Task` value (e.g. {"referring": 0.3}).
        mask_threshold: pixel probability threshold, in (0, 1).
        overlap_threshold: panoptic segment validity (owned / own area), in [0, 1].
    """

    score_threshold: float = 0.5
    task_score_thresholds: dict[str, float] = field(default_factory=dict)
    mask_threshold: float = 0.5
    overlap_threshold: float = 0.8

    def __post_init__(self) -> None:
        check_threshold("score_threshold", self.score_threshold)
        check_threshold("mask_threshold", self.mask_threshold)
        check_threshold("overlap_threshold", self.overlap_threshold)
        for task, value in self.task_score_thresholds.items():
            try:
                Task(task)
            except ValueError:
                raise ValueError(f"task_score_thresholds: unknown task {task!r}; use one of {[t.value for t in Task]}")
            check_threshold("score_threshold", value)

    def thresholds_for(self, task: Task) -> Thresholds:
        """The defaults for one task."""
        score = self.task_score_thresholds.get(Task(task).value, self.score_threshold)
        return Thresholds(score=score, mask=self.mask_threshold, overlap=self.overlap_threshold)


@dataclass
class XSamConfig:
    """The whole model. `sampler_num_points` is the region sampler's point count ([A]: 256)."""

    vision: XSamVisionConfig = field(default_factory=XSamVisionConfig)
    mask_encoder: XSamMaskEncoderConfig = field(default_factory=XSamMaskEncoderConfig)
    language: XSamLanguageConfig = field(default_factory=XSamLanguageConfig)
    decoder: XSamDecoderConfig = field(default_factory=XSamDecoderConfig)
    postprocess: XSamPostProcessConfig = field(default_factory=XSamPostProcessConfig)
    sampler_num_points: int = 256
    name: str = "x-sam-released"

    _SUB_CONFIGS = {
        "vision": XSamVisionConfig,
        "mask_encoder": XSamMaskEncoderConfig,
        "language": XSamLanguageConfig,
        "decoder": XSamDecoderConfig,
        "postprocess": XSamPostProcessConfig,
    }

    @classmethod
    def released(cls) -> XSamConfig:
        """The configuration of the released X-SAM weights (spec section 1.1)."""
        return cls()

    @classmethod
    def tiny(cls, vocab_size: int = 512) -> XSamConfig:
        """A few-hundred-thousand-parameter configuration for tests (same code path)."""
        return cls(
            vision=XSamVisionConfig(
                hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                image_size=32, patch_size=8,
            ),
            mask_encoder=XSamMaskEncoderConfig(
                hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_dim=64, image_size=64,
                patch_size=8, window_size=4, global_attn_indexes=(1, 3), connector_select_layers=(2, 3, 4),
                connector_hidden_dim=16,
            ),
            language=XSamLanguageConfig(
                vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512, sliding_window=None,
                bos_token_id=None, eos_token_id=None, pad_token_id=None, condition_dim=32,
            ),
            decoder=XSamDecoderConfig(
                hidden_dim=32, num_queries=8, decoder_layers=3, encoder_layers=1, num_attention_heads=4,
                dim_feedforward=64, encoder_feedforward_dim=64,
            ),
            sampler_num_points=32,
            name="x-sam-tiny",
        )

    @classmethod
    def tabletop(cls, vocab_size: int = 512) -> XSamConfig:
        """The architecture of the shipped tabletop demo model (trained on generated scenes).

        Sized to train on a 2-core CPU within an hour: the SAM ViT runs on 8x8 patches of a 256²
        image (32² tokens, windowed attention); four connector levels (scales 2/1/0.5/0.25, as
        Mask2Former's four backbone levels) give the pixel decoder a 64² FPN level (stride 4) and
        three small deformable levels (32², 16², 8²); the LLM sees 16² SAM tokens.
        """
        return cls(
            vision=XSamVisionConfig(
                hidden_size=96, intermediate_size=192, num_hidden_layers=3, num_attention_heads=3,
                image_size=128, patch_size=16,
            ),
            mask_encoder=XSamMaskEncoderConfig(
                hidden_size=128, num_hidden_layers=6, num_attention_heads=4, mlp_dim=256, image_size=256,
                patch_size=8, window_size=8, global_attn_indexes=(2, 5), projector_downsample_ratio=0.5,
                connector_select_layers=(3, 4, 5, 6), connector_scale_factors=(2.0, 1.0, 0.5, 0.25),
                connector_hidden_dim=64,
            ),
            language=XSamLanguageConfig(
                vocab_size=vocab_size, hidden_size=192, intermediate_size=512, num_hidden_layers=4,
                num_attention_heads=6, num_key_value_heads=6, max_position_embeddings=1024, sliding_window=None,
                bos_token_id=None, eos_token_id=None, pad_token_id=None, condition_dim=64,
            ),
            decoder=XSamDecoderConfig(
                hidden_dim=64, num_queries=24, decoder_layers=4, encoder_layers=2, num_attention_heads=4,
                dim_feedforward=256, encoder_feedforward_dim=256,
            ),
            sampler_num_points=64,
            name="x-sam-tabletop",
        )

    @classmethod
    def tabletop_large(cls, vocab_size: int = 512) -> XSamConfig:
        """`tabletop()` with a wider SAM encoder, LLM and decoder (the model-size experiment of
        issue 14's learning curves; same code path, about 2.5x the parameters)."""
        config = cls.tabletop(vocab_size)
        config.mask_encoder = dataclasses.replace(config.mask_encoder, hidden_size=192, num_attention_heads=6, mlp_dim=384,
                                                  connector_hidden_dim=96)
        config.language = dataclasses.replace(config.language, hidden_size=288, intermediate_size=768, num_hidden_layers=6,
                                              condition_dim=96)
        config.decoder = dataclasses.replace(config.decoder, hidden_dim=96, decoder_layers=6, dim_feedforward=384,
                                             encoder_feedforward_dim=384)
        config.name = "x-sam-tabletop-large"
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> XSamConfig:
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in cls._SUB_CONFIGS:
                sub_cls = cls._SUB_CONFIGS[key]
                known = {f.name: f for f in dataclasses.fields(sub_cls)}
                unknown = set(value) - set(known)
                if unknown:
                    raise ValueError(f"Unknown {key} config keys {sorted(unknown)}; known: {sorted(known)}")
                kwargs[key] = sub_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
            elif key in ("sampler_num_points", "name"):
                kwargs[key] = value
            else:
                raise ValueError(f"Unknown XSamConfig key {key!r}")
        return cls(**kwargs)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> XSamConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
