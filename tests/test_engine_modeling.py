"""Shape and building-block checks of the X-SAM modules on the tiny configuration."""

from __future__ import annotations

import pytest
import torch

from xsam_engine.configuration_xsam import XSamConfig
from xsam_engine.modeling_mask_encoder import pixel_shuffle
from xsam_engine.modeling_xsam import XSamModel


class XSamModelTester:
    def __init__(self, config: XSamConfig, batch_size: int = 2) -> None:
        self.config = config
        self.batch_size = batch_size

    def prepare_config_and_inputs(self):
        torch.manual_seed(0)
        sam = torch.randn(self.batch_size, 3, self.config.mask_encoder.image_size, self.config.mask_encoder.image_size)
        siglip = torch.randn(self.batch_size, 3, self.config.vision.image_size, self.config.vision.image_size)
        return self.config, sam, siglip

    def create_and_check_model(self) -> None:
        config, sam, siglip = self.prepare_config_and_inputs()
        model = XSamModel(config).eval()
        encoder = config.mask_encoder
        with torch.no_grad():
            mask_output = model.encode_mask_image(sam)
            assert mask_output.projector_input.shape == (self.batch_size, encoder.grid_size, encoder.grid_size, encoder.hidden_size)
            for features, channels, size in zip(mask_output.multi_scale_features, encoder.feature_channels, encoder.feature_sizes):
                assert features.shape == (self.batch_size, channels, size, size)
            tokens = model.sam_tokens(mask_output)
            assert tokens.shape == (self.batch_size, encoder.num_tokens, config.language.hidden_size)
            vision = model.encode_vision(siglip)
            assert vision.shape == (self.batch_size, config.vision.num_tokens, config.language.hidden_size)
            pixels = model.encode_pixels(mask_output)
            mask_size = encoder.feature_sizes[0]
            assert pixels.mask_features.shape == (self.batch_size, config.decoder.hidden_dim, mask_size, mask_size)
            conditions = torch.randn(self.batch_size, 3, config.language.condition_dim)
            seg = torch.randn(self.batch_size, config.language.condition_dim)
            output = model.decode(pixels, conditions, seg, return_auxiliary=True)
            assert output.class_logits.shape == (self.batch_size, config.decoder.num_queries, 4)
            assert output.mask_logits.shape == (self.batch_size, config.decoder.num_queries, mask_size, mask_size)
            assert len(output.auxiliary) == config.decoder.decoder_layers - 1


@pytest.mark.parametrize("name", ["tiny", "tabletop"])
def test_model_stage_shapes(name: str) -> None:
    XSamModelTester(getattr(XSamConfig, name)()).create_and_check_model()


def test_released_config_matches_spec() -> None:
    config = XSamConfig.released()
    assert config.vision.num_tokens == 729 and config.vision.used_layers == 26
    assert config.mask_encoder.num_tokens == 1024 and config.mask_encoder.projector_block == 23
    assert config.mask_encoder.feature_channels == [512, 1024, 2048]
    assert config.mask_encoder.feature_sizes == [128, 64, 32]
    assert config.mask_encoder.projector_input_dim == 4096
    assert config.decoder.num_queries == 200 and config.decoder.decoder_layers == 10
    assert config.language.vocab_size == 32014


def test_config_json_round_trip(tmp_path) -> None:
    config = XSamConfig.tabletop(vocab_size=300)
    config.save(tmp_path / "config.json")
    assert XSamConfig.load(tmp_path / "config.json") == config
    with pytest.raises(ValueError, match="Unknown"):
        XSamConfig.from_dict({"vision": {"not_a_field": 1}})


def test_pixel_shuffle_half_concatenates_2x2_blocks_row_major() -> None:
    x = torch.randn(1, 4, 6, 3)
    out = pixel_shuffle(x, 0.5)
    assert out.shape == (1, 2, 3, 12)
    for i in range(2):
        for j in range(3):
            expected = torch.cat([x[0, 2 * i, 2 * j], x[0, 2 * i, 2 * j + 1], x[0, 2 * i + 1, 2 * j], x[0, 2 * i + 1, 2 * j + 1]])
            torch.testing.assert_close(out[0, i, j], expected)


def test_pixel_shuffle_double_uses_column_offset_as_outer_index() -> None:
    x = torch.randn(1, 3, 2, 8)
    out = pixel_shuffle(x, 2)
    quarter = 2
    assert out.shape == (1, 6, 4, 2)
    for h in range(3):
        for w in range(2):
            for m in range(2):
                for k in range(2):
                    part = 2 * k + m
                    torch.testing.assert_close(out[0, 2 * h + m, 2 * w + k], x[0, h, w, part * quarter : (part + 1) * quarter])


def test_background_class_is_last_and_padded_conditions_are_suppressed() -> None:
    config = XSamConfig.tiny()
    model = XSamModel(config).eval()
    with torch.no_grad():
        pixels = model.encode_pixels(model.encode_mask_image(torch.randn(1, 3, 64, 64)))
        conditions = torch.randn(1, 3, config.language.condition_dim)
        mask = torch.tensor([[True, True, False]])
        output = model.decode(pixels, conditions, torch.randn(1, config.language.condition_dim), mask)
    assert output.class_logits.shape[-1] == 4
    assert torch.all(output.class_logits[..., 2] <= -1e8)
    assert torch.all(output.class_logits[..., [0, 1, 3]].abs() <= config.decoder.logit_clamp)


# -- the multimodal forward ---------------------------------------------------------------------


def _forward_inputs():
    """Two prompts on one image (a referring question and an interactive one with a region), the
    way training batches them, with the tiny model and the tabletop tokenizer."""
    import numpy as np

    from engine_fixtures import scene_image, tiny_model_and_tokenizer
    from xsam_engine.predictor import XSamPredictor
    from xsam_engine.requests import SegmentationRequest, Task, VisualPrompt

    model, tokenizer = tiny_model_and_tokenizer()
    predictor = XSamPredictor(model, tokenizer)
    image = scene_image()
    predictor.set_image(image)
    referring = SegmentationRequest(Task.REFERRING, text="red cup")
    interactive = SegmentationRequest(Task.INTERACTIVE, regions=(VisualPrompt.point(40, 30),))
    seg = [tokenizer.convert_tokens_to_ids("<SEG>")]
    ids = [predictor.prompt_ids(referring) + seg, predictor.prompt_ids(interactive) + seg]
    padded, _ = predictor._rasterise_regions(interactive)
    sam = predictor.processor.sam_inputs(image).pixel_values
    siglip = predictor.processor.siglip_inputs(image)
    return model, predictor, (referring, interactive), ids, padded, sam, siglip, np


def test_forward_on_pixels_equals_forward_on_cached_embeddings_and_says_what_is_missing() -> None:
    model, predictor, _, ids, padded, sam, siglip, _ = _forward_inputs()
    with torch.no_grad():
        embeddings = model.get_image_embeddings(sam, siglip)
        on_pixels = model(ids, predictor.special, pixel_values=sam, siglip_pixel_values=siglip, image_index=[0, 0],
                          prompt_masks=[[], padded], generator=torch.Generator().manual_seed(0))
        on_cache = model(ids, predictor.special, image_embeddings=embeddings, image_index=[0, 0],
                         prompt_masks=[[], padded], generator=torch.Generator().manual_seed(0))
    assert on_pixels.class_logits.shape == (2, model.config.decoder.num_queries, 2)
    torch.testing.assert_close(on_pixels.class_logits, on_cache.class_logits)
    torch.testing.assert_close(on_pixels.mask_logits, on_cache.mask_logits)
    assert on_pixels.conditions.seg_found.tolist() == [True, True]
    with pytest.raises(ValueError, match="Either pixel_values and siglip_pixel_values, or image_embeddings"):
        model(ids, predictor.special, pixel_values=sam)
    embeddings.llm_image_tokens = None
    with pytest.raises(ValueError, match="no llm_image_tokens"):
        model(ids, predictor.special, image_embeddings=embeddings)


def test_pooling_projects_every_span_position_then_averages() -> None:
    """X-SAM's `_get_index_embeds`: condition i = mean over positions <p> .. </p> (inclusive) of
    llm_projector(state), not the projection of the mean (the projector is non-linear)."""
    model, predictor, _, ids, padded, sam, siglip, _ = _forward_inputs()
    with torch.no_grad():
        output = model(ids, predictor.special, pixel_values=sam, siglip_pixel_values=siglip, image_index=[0, 0],
                       prompt_masks=[[], padded])
        conditions = output.conditions
        projector = model.language_model.condition_projector
        for row, spans in enumerate(conditions.spans):
            assert len(spans) == 1  # <p>red cup</p>, <p><region></p>
            start, end = spans[0]
            assert conditions.token_ids[row, start] == predictor.special.phrase_start
            assert conditions.token_ids[row, end] == predictor.special.phrase_end
            expected = projector(conditions.hidden_states[row, start : end + 1]).mean(dim=0)
            torch.testing.assert_close(conditions.condition_embeds[row, 0], expected)
            seg_position = int((conditions.token_ids[row] == predictor.special.seg).nonzero()[0])
            torch.testing.assert_close(conditions.seg_embeds[row], projector(conditions.hidden_states[row, seg_position]))
        mean_first = projector(conditions.hidden_states[0, spans[0][0] : spans[0][1] + 1].mean(dim=0))
        assert not torch.allclose(mean_first, conditions.condition_embeds[0, 0])


def test_the_predictor_and_training_share_the_models_forward() -> None:
    """The predictor's forced-answer path and the batched forward give the same conditions: one
    splice / pooling implementation (XSamModel.get_conditions)."""
    model, predictor, (referring, interactive), ids, padded, sam, siglip, _ = _forward_inputs()
    with torch.no_grad():
        batched = model(ids, predictor.special, pixel_values=sam, siglip_pixel_values=siglip, image_index=[0, 0],
                        prompt_masks=[[], padded], generator=torch.Generator().manual_seed(predictor.seed))
    for row, request in enumerate((referring, interactive)):
        condition = predictor.encode_request(request)
        torch.testing.assert_close(condition.condition_embeds, batched.conditions.condition_embeds[row, :1],
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(condition.seg_embeds[0], batched.conditions.seg_embeds[row], rtol=1e-4, atol=1e-5)
