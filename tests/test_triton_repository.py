"""The Triton model repository writer: configs parsed with Triton's own model_config.proto, batch axis, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnxruntime = pytest.importorskip("onnxruntime", reason="the batch check runs the exported graphs")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient ships Triton's config proto")

from google.protobuf import text_format  # noqa: E402

from engine_fixtures import tiny_model_and_tokenizer  # noqa: E402

from xsam_engine.backends import model_fingerprint  # noqa: E402
from xsam_engine.export.graphs import GRAPH_NAMES, example_inputs, graph_specs  # noqa: E402
from xsam_engine.triton.repository import RepositoryOptions, write_triton_repository  # noqa: E402

pytestmark = pytest.mark.timeout(300)
FP32 = model_config_pb2.DataType.Value("TYPE_FP32")


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_tokenizer()[0]


def _config(folder) -> model_config_pb2.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("platform", ["onnxruntime_onnx", "tensorrt_plan", "python"])
def test_configs_have_the_graphs_names_dims_dtypes_and_batching(tiny, tmp_path, platform):
    options = RepositoryOptions(platform=platform, max_batch_size=4, max_queue_delay_us=300, instance_count=2)
    folders = write_triton_repository(tiny, tmp_path, options)
    assert list(folders) == [*GRAPH_NAMES, "xsam_frame"]
    ensemble = _config(folders.pop("xsam_frame"))
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 4
    assert [i.name for i in ensemble.input] == ["pixel_values", "condition_embeds", "seg_embeds"]
    assert [o.name for o in ensemble.output] == ["class_logits", "mask_logits"]
    steps = ensemble.ensemble_scheduling.step
    assert [step.model_name for step in steps] == ["mask_encoder", "pixel_decoder", "mask_decoder"]
    # The pyramid goes encoder -> pixel decoder and the features pixel decoder -> mask decoder, inside the server.
    levels = len(tiny.config.mask_encoder.feature_sizes)
    assert dict(steps[0].output_map) == {f"pyramid_{i}": f"_pyramid_{i}" for i in range(levels)}
    assert dict(steps[1].input_map) == dict(steps[0].output_map)
    assert dict(steps[1].output_map)["mask_features"] == dict(steps[2].input_map)["mask_features"] == "_mask_features"
    assert dict(steps[2].input_map)["condition_embeds"] == "condition_embeds"
    assert dict(steps[2].output_map) == {"class_logits": "class_logits", "mask_logits": "mask_logits"}
    c = tiny.config
    S, s = c.mask_encoder.image_size, c.vision.image_size
    llm, hidden, queries = c.language.hidden_size, c.decoder.hidden_dim, c.decoder.num_queries
    M = max(c.mask_encoder.feature_sizes)  # mask-feature side
    # dims = the graph shapes without the leading batch axis; dynamic axes (C conditions, P points) are -1.
    expected_inputs = {
        "mask_encoder": {"pixel_values": [3, S, S]},
        "vision_encoder": {"pixel_values": [3, s, s]},
        "mask_decoder": {"condition_embeds": [-1, hidden], "seg_embeds": [hidden]},
        "region_encoder": {"points": [-1, 2]},
    }
    expected_outputs = {
        "mask_encoder": {"sam_tokens": [c.mask_encoder.num_tokens, llm]},
        "vision_encoder": {"image_tokens": [c.vision.num_tokens, llm]},
        "mask_decoder": {"class_logits": [queries, -1], "mask_logits": [queries, M, M]},
        "region_encoder": {"region_token": [llm]},
    }
    fingerprint = model_fingerprint(tiny)
    for name, folder in folders.items():
        config = _config(folder)
        assert config.name == name and config.max_batch_size == 4
        assert config.dynamic_batching.max_queue_delay_microseconds == 300
        assert config.instance_group[0].count == 2
        kind = "KIND_CPU" if platform == "python" else "KIND_GPU"
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.Kind.Value(kind)
        assert config.parameters["xsam_fingerprint"].string_value == fingerprint
        assert all(t.data_type == FP32 for t in (*config.input, *config.output))
        spec = graph_specs(c)[name]
        assert [o.name for o in config.output] == spec.output_names
        inputs = {i.name: list(i.dims) for i in config.input}
        # The tiny decoder has 2 layers and never reads level_2: the exporter drops it, so does the config.
        assert list(inputs) == [n for n in spec.input_names if not (name == "mask_decoder" and n == "level_2")]
        for tensor, dims in expected_inputs.get(name, {}).items():
            assert inputs[tensor] == dims
        for tensor, dims in expected_outputs.get(name, {}).items():
            assert list(next(o for o in config.output if o.name == tensor).dims) == dims
        version = folder / "1"
        assert (version / f"{name}.onnx").is_file()
        if platform == "python":
            assert config.backend == "python" and (version / "model.py").is_file()
            assert config.parameters["onnx_file"].string_value == f"{name}.onnx"
        else:
            assert config.platform == platform
            assert config.default_model_filename == (f"{name}.onnx" if platform == "onnxruntime_onnx" else "model.plan")
    script = tmp_path / "build_plans.sh"
    assert script.is_file() == (platform == "tensorrt_plan")
    if platform == "tensorrt_plan":
        text = script.read_text()
        assert f"--minShapes=pixel_values:1x3x{S}x{S} --optShapes=pixel_values:4x3x{S}x{S} --maxShapes=pixel_values:4x3x{S}x{S}" in text
        assert f"condition_embeds:1x1x{hidden}" in text and f"condition_embeds:4x256x{hidden}" in text
        assert "level_2" not in text.split("mask_decoder.onnx")[1].split("\n")[0]


def test_batched_graphs_treat_each_request_independently(tiny, tmp_path):
    # What lets Triton's dynamic batcher stack cameras: batch 2 = two batch-1 runs, for every graph.
    write_triton_repository(tiny, tmp_path, RepositoryOptions(platform="python"))
    for name, spec in graph_specs(tiny.config).items():
        session = onnxruntime.InferenceSession(str(tmp_path / name / "1" / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        first, second = example_inputs(spec, seed=1), example_inputs(spec, seed=2)
        both = session.run(None, {n: np.concatenate([first[n].numpy(), second[n].numpy()]) for n in names})
        alone = [session.run(None, {n: feed[n].numpy() for n in names}) for feed in (first, second)]
        for index, output in enumerate(both):
            assert output.shape[0] == 2
            np.testing.assert_allclose(output, np.concatenate([alone[0][index], alone[1][index]]), atol=1e-5, err_msg=name)
        # The two requests really differ (in some output: the random tiny SAM's tokens barely move).
        assert any(not np.allclose(a, b) for a, b in zip(*alone)), name


def test_options_are_checked():
    with pytest.raises(ValueError, match="platform must be one of"):
        RepositoryOptions(platform="openvino")
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        RepositoryOptions(max_batch_size=0)
    with pytest.raises(ValueError, match="instance_kind must be one of"):
        RepositoryOptions(instance_kind="tpu")


def test_export_command_writes_a_repository_of_the_shipped_model(tmp_path):
    from xsam_engine.checkpoint import load_pretrained
    from xsam_engine.export.__main__ import main

    assert main(["--triton-repository", str(tmp_path), "--triton-platform", "onnxruntime_onnx", "--max-batch-size", "2"]) == 0
    model, _ = load_pretrained(None, device="cpu", dtype=torch.float32)
    for name in (*GRAPH_NAMES, "xsam_frame"):
        config = _config(tmp_path / name)
        assert config.max_batch_size == 2
        assert config.platform == ("ensemble" if name == "xsam_frame" else "onnxruntime_onnx")
        assert config.parameters["xsam_fingerprint"].string_value == model_fingerprint(model)
    assert main(["--triton-repository", str(tmp_path), "--max-batch-size", "0"]) == 2


@pytest.mark.parametrize("target", ["--onnx", "--triton-repository"])
def test_export_command_refuses_a_bad_model_or_target_with_a_clear_error(tmp_path, capsys, target):
    """A --model that is not a model directory, or a target that cannot be created (a file in the
    way): exit status 1 and "error: ..." naming the path, not a traceback; nothing is written."""
    from xsam_engine.export.__main__ import main

    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert main(["--model", str(tmp_path / "no_such_model"), target, str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: --model {tmp_path / 'no_such_model'}: ") and "not an xsam model" in error, error
    assert main(["--model", str(blocker), target, str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.startswith(f"error: --model {blocker}: ")
    assert not (tmp_path / "out").exists()
    assert main([target, str(blocker / "out")]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: cannot write {blocker / 'out'}: "), error
