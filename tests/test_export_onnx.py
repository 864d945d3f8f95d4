"""ONNX export of the tiny model: checker, names, dynamic axes, TensorRT compatibility, parity with PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="onnx is needed to export and check graphs")
onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is needed to run the exported graphs")

from engine_fixtures import scene_image, tiny_model_and_tokenizer  # noqa: E402

from xsam_engine.backends import OnnxRuntimeStages  # noqa: E402
from xsam_engine.configuration_xsam import XSamConfig  # noqa: E402
from xsam_engine.export import GRAPH_NAMES, OPSET, export_onnx, graph_specs, read_manifest  # noqa: E402
from xsam_engine.export.graphs import example_inputs  # noqa: E402
from xsam_engine.export.onnx_export import onnx_files, onnx_sha256  # noqa: E402
from xsam_engine.export.verify import check_tensorrt_compatibility, compare_graphs, compare_predictors  # noqa: E402
from xsam_engine.predictor import XSamPredictor  # noqa: E402
from xsam_engine.requests import SegmentationRequest, Task, VisualPrompt  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, tokenizer = tiny_model_and_tokenizer()
    directory = tmp_path_factory.mktemp("onnx")
    paths = export_onnx(model, directory)
    return model, tokenizer, directory, paths


def test_every_graph_is_written_with_external_data_and_passes_the_checker(exported):
    _, _, directory, paths = exported
    assert set(paths) == set(GRAPH_NAMES)
    for name, path in paths.items():
        assert path == directory / f"{name}.onnx"
        onnx.checker.check_model(str(path), full_check=True)
        graph = onnx.load(str(path), load_external_data=False)
        assert graph.opset_import[0].version >= 17 == OPSET
        # Weights live in <name>.onnx.data, not inside the protobuf (full-size graphs exceed 2 GB limits).
        if name != "region_encoder":  # parameter-free
            assert len(onnx_files(path)) == 2
            assert all(init.data_location == onnx.TensorProto.EXTERNAL for init in graph.graph.initializer if init.dims and np.prod(init.dims) > 256)


def test_input_and_output_names_match_the_documented_specs(exported):
    model, _, _, paths = exported
    specs = graph_specs(model.config)
    for name, path in paths.items():
        graph = onnx.load(str(path), load_external_data=False).graph
        spec = specs[name]
        # The exporter drops inputs a graph never reads (level_2 of the 2-layer tiny decoder).
        assert [i.name for i in graph.input] == [n for n in spec.input_names if n in {i.name for i in graph.input}]
        assert set(spec.input_names) - {i.name for i in graph.input} <= {"level_2"}
        assert [o.name for o in graph.output] == spec.output_names
    decoder_inputs = {i.name: i for i in onnx.load(str(paths["mask_decoder"]), load_external_data=False).graph.input}
    assert decoder_inputs["condition_embeds"].type.tensor_type.shape.dim[1].dim_param == "num_conditions"


def test_manifest_records_hashes_and_shapes(exported):
    model, _, directory, paths = exported
    manifest = read_manifest(directory)
    assert manifest["opset"] == OPSET
    assert XSamConfig.from_dict(manifest["config"]) == model.config
    for name, path in paths.items():
        assert manifest["graphs"][name]["sha256"] == onnx_sha256(path)
    assert manifest["graphs"]["mask_decoder"]["inputs"]["condition_embeds"][1] == "num_conditions"
    json.dumps(manifest)


def test_graphs_only_use_tensorrt_operators_and_no_float64(exported):
    _, _, _, paths = exported
    for name, path in paths.items():
        assert check_tensorrt_compatibility(path) == [], name


@pytest.mark.parametrize("num_conditions", [1, 5])
def test_mask_decoder_runs_with_any_number_of_conditions(exported, num_conditions):
    model, _, directory, _ = exported
    spec = graph_specs(model.config)["mask_decoder"]
    inputs = example_inputs(spec, {"num_conditions": num_conditions})
    session = onnxruntime.InferenceSession(str(directory / "mask_decoder.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
    class_logits, mask_logits = session.run(None, feeds)
    queries = model.config.decoder.num_queries
    assert class_logits.shape == (1, queries, num_conditions + 1)
    from xsam_engine.export.graphs import build_graph

    with torch.no_grad():
        expected = build_graph("mask_decoder", model)(*(inputs[n] for n in spec.input_names))
    np.testing.assert_allclose(class_logits, expected[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(mask_logits, expected[1].numpy(), atol=1e-4)


def test_each_graph_matches_pytorch_on_a_scene(exported):
    model, _, directory, _ = exported
    for parity in compare_graphs(model, directory, scene_image()):
        assert max(parity.max_abs_error.values()) < 1e-3, (parity.graph, parity.max_abs_error)


def test_predictor_with_onnxruntime_stages_gives_the_same_masks(exported):
    model, tokenizer, directory, _ = exported
    torch_predictor = XSamPredictor(model, tokenizer)
    onnx_predictor = XSamPredictor(model, tokenizer, stages=OnnxRuntimeStages(directory, model.config))
    images = [scene_image(seed) for seed in (1, 2)]
    height, width = images[0].shape[:2]
    requests = [
        SegmentationRequest(task=Task.REFERRING, text="red cup"),
        SegmentationRequest(task=Task.INSTANCE, vocabulary=("cup", "bowl"), score_threshold=0.0),
        SegmentationRequest(task=Task.INTERACTIVE, regions=(VisualPrompt.from_box(10, 10, width / 2, height / 2),), score_threshold=0.0),
    ]
    for row in compare_predictors(torch_predictor, onnx_predictor, images, requests):
        assert row.instances_torch == row.instances_onnxruntime, row
        assert row.min_final_mask_iou >= 0.99, row
        assert row.all_query_mask_iou >= 0.99, row


def test_region_graph_reproduces_the_pytorch_sampler(exported):
    model, _, directory, _ = exported
    stages = OnnxRuntimeStages(directory, model.config)
    tokens = torch.randn(model.config.mask_encoder.num_tokens, model.config.language.hidden_size)
    size = model.config.mask_encoder.image_size
    masks = [torch.zeros(size, size, dtype=torch.bool) for _ in range(2)]
    masks[0][5:30, 8:20] = True  # more pixels than sampler points
    masks[1][40, 41] = True  # a single pixel: repeats
    expected = model.encode_regions(tokens, masks, torch.Generator().manual_seed(3))
    actual = stages.encode_regions(tokens, masks, torch.Generator().manual_seed(3))
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_onnxruntime_backend_runs_the_exported_region_graph_for_visual_prompts(tmp_path) -> None:
    """Region prompts go through the image-stage interface: with ONNX Runtime stages an interactive
    request runs the exported region_encoder graph (its session exists afterwards) and gives the
    PyTorch region tokens, so the graph that is exported and built is also the one that runs."""
    from xsam_engine.backends import create_predictor
    from xsam_engine.requests import VisualPrompt

    model, tokenizer = tiny_model_and_tokenizer()
    created = create_predictor(backend="onnxruntime", device="cpu", model=model, tokenizer=tokenizer,
                               engine_cache_dir=tmp_path)
    stages = created.predictor.stages
    assert created.info.backend == "onnxruntime" and "region_encoder" not in stages._sessions
    created.predictor.set_image(scene_image())
    request = SegmentationRequest(Task.INTERACTIVE, regions=(VisualPrompt.point(40, 30),))
    condition = created.predictor.encode_request(request)
    assert "region_encoder" in stages._sessions
    reference = XSamPredictor(*tiny_model_and_tokenizer())
    reference.set_image(scene_image())
    torch.testing.assert_close(condition.condition_embeds, reference.encode_request(request).condition_embeds,
                               rtol=1e-3, atol=1e-4)
