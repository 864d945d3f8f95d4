"""The triton backend against a real Triton Inference Server on 127.0.0.1 (nvidia-pytriton's tritonserver 2.51).

The server serves a repository written by `write_triton_repository(..., platform="python")`
(the exported graphs, run by ONNX Runtime inside Triton's Python backend; the bundle has no ONNX
Runtime backend). Compared with the local ONNX Runtime backend on the same model: every task on
the tiny and the shipped model, a crash and restart of the server mid-stream, a server missing a
model, a server of other weights, a server that never answers, two client processes at once.
Every server binds 127.0.0.1 on free ports; every test has a pytest-timeout and every client
call a deadline.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc,http] is needed for the triton backend")
pytest.importorskip("onnxruntime", reason="the served graphs run on onnxruntime")
if __import__("importlib.util").util.find_spec("pytriton") is None:
    pytest.skip("nvidia-pytriton (the bundled tritonserver) is not installed", allow_module_level=True)

from engine_fixtures import TASK_REQUESTS, scene_image, tiny_model_and_tokenizer  # noqa: E402
from triton_client_process import track  # noqa: E402

from xsam_engine.backends import OnnxRuntimeStages, create_predictor, ensure_onnx, model_fingerprint  # noqa: E402
from xsam_engine.backends.triton_stages import TritonOptions, TritonStages, TritonUnavailableError  # noqa: E402
from xsam_engine.export.verify import compare_predictors  # noqa: E402
from xsam_engine.predictor import XSamPredictor  # noqa: E402
from xsam_engine.requests import Task  # noqa: E402
from xsam_engine.triton.local_server import LocalTritonServer, free_port  # noqa: E402
from xsam_engine.triton.repository import RepositoryOptions, write_triton_repository  # noqa: E402

pytestmark = pytest.mark.timeout(300)
PYTHON_PLATFORM = RepositoryOptions(platform="python", python_threads=1, max_queue_delay_us=2000)


class Served:
    """A model, its tokenizer, the local ONNX Runtime predictor, and a server with its repository."""

    def __init__(self, model, tokenizer, tmp: Path) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.repository = tmp / "repository"
        write_triton_repository(model, self.repository, PYTHON_PLATFORM)
        self.onnx_dir = ensure_onnx(model, tmp / "onnx")
        self.server = LocalTritonServer(self.repository).start()

    def local(self) -> XSamPredictor:
        return XSamPredictor(self.model, self.tokenizer, stages=OnnxRuntimeStages(self.onnx_dir, self.model.config))

    def remote(self, protocol: str = "grpc", timeout_s: float = 10.0, fallback=None, frame_ensemble: bool = True) -> XSamPredictor:
        url = self.server.grpc_url if protocol == "grpc" else self.server.http_url
        options = TritonOptions(url=url, protocol=protocol, timeout_s=timeout_s, frame_ensemble=frame_ensemble)
        stages = TritonStages(self.model.config, options, fingerprint=model_fingerprint(self.model), fallback=fallback)
        return XSamPredictor(self.model, self.tokenizer, stages=stages)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, tokenizer = tiny_model_and_tokenizer()
    served = Served(model, tokenizer, tmp_path_factory.mktemp("tiny"))
    yield served
    served.server.close()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    from xsam_engine.checkpoint import load_pretrained

    model, tokenizer = load_pretrained(None, device="cpu", dtype=torch.float32)
    served = Served(model, tokenizer, tmp_path_factory.mktemp("shipped"))
    yield served
    served.server.close()


def _assert_same_masks(local: XSamPredictor, remote: XSamPredictor, images: list[np.ndarray], tasks=tuple(Task)) -> None:
    rows = compare_predictors(local, remote, images, [TASK_REQUESTS[task] for task in tasks])
    assert len(rows) == len(tasks) * len(images)
    for row in rows:
        assert row.instances_torch == row.instances_onnxruntime, row
        assert row.min_final_mask_iou >= 0.999, row
        assert row.all_query_mask_iou >= 0.999, row
        assert not row.notes, row  # same answer text (generation saw the same image tokens), same messages


@pytest.mark.parametrize("frame_ensemble", [True, False], ids=["xsam_frame ensemble", "one call per stage"])
def test_every_task_on_the_tiny_model_matches_the_local_backend(tiny, frame_ensemble):
    # Each task on frame 1, then its condition tracked on frame 2 (decoder only).
    _assert_same_masks(tiny.local(), tiny.remote(frame_ensemble=frame_ensemble), [scene_image(1), scene_image(2)])


def test_every_task_on_the_shipped_model_matches_the_local_backend(shipped):
    images = [scene_image(seed, width=320, height=240) for seed in (5, 6)]
    _assert_same_masks(shipped.local(), shipped.remote(), images)


def test_http_protocol_gives_the_same_masks(tiny):
    _assert_same_masks(tiny.local(), tiny.remote(protocol="http"), [scene_image(3)], tasks=(Task.INSTANCE, Task.VGD))


def test_create_predictor_and_the_cli_use_the_server(tiny, tmp_path):
    predictor, info = create_predictor(backend="triton", device="cpu", model=tiny.model, tokenizer=tiny.tokenizer,
                                       triton_url=tiny.server.grpc_url, log=False)
    assert isinstance(predictor.stages, TritonStages) and info.backend == "triton" and not info.fallback
    assert info.summary() == f"image stages: triton at grpc://{tiny.server.grpc_url}; LLM: torch float32 on cpu"
    from xsam_engine.cli import build_parser

    args = build_parser().parse_args(["segment", "x.png", "--backend", "triton", "--triton-url", "gpu:8001",
                                      "--triton-protocol", "http", "--triton-timeout", "2.5", "--triton-fallback"])
    assert (args.backend, args.triton_url, args.triton_protocol, args.triton_timeout, args.triton_fallback) == (
        "triton", "gpu:8001", "http", 2.5, True)


def test_server_killed_mid_stream_errors_name_it_and_the_stream_recovers_after_restart(tiny):
    local, remote = tiny.local(), tiny.remote(timeout_s=3.0)
    frames = [scene_image(seed) for seed in range(10, 16)]
    reference = track_with(local, frames)
    url = f"grpc://{tiny.server.grpc_url}"
    results = []
    remote.set_image(scene_image(1))
    condition = remote.segment(TASK_REQUESTS[Task.INSTANCE]).condition
    for index, frame in enumerate(frames):
        if index == 2:
            tiny.server.kill()  # crash: SIGKILL, no clean shutdown
        if index == 4:
            tiny.server.restart()
        started = time.monotonic()
        try:
            remote.set_image(frame)
            results.append(remote.decode(condition))
        except TritonUnavailableError as error:
            assert url in str(error) and "unreachable" in str(error)
            assert time.monotonic() - started < 2 * 3.0 + 1  # two attempts, each bounded by the timeout
            results.append(None)
    assert [r is None for r in results] == [False, False, True, True, False, False]
    for expected, actual in zip(reference, results):
        if actual is not None:
            assert [i.label for i in actual.instances] == [i.label for i in expected.instances]
            assert all(np.array_equal(a.mask, b.mask) for a, b in zip(actual.instances, expected.instances))


def track_with(predictor: XSamPredictor, frames: list[np.ndarray]):
    predictor.set_image(scene_image(1))
    condition = predictor.segment(TASK_REQUESTS[Task.INSTANCE]).condition
    results = []
    for frame in frames:
        predictor.set_image(frame)
        results.append(predictor.decode(condition))
    return results


def test_fallback_runs_locally_while_the_server_is_down_and_returns_to_it(tiny, caplog):
    local = OnnxRuntimeStages(tiny.onnx_dir, tiny.model.config)
    remote = tiny.remote(timeout_s=3.0, fallback=local)
    remote.stages.options = TritonOptions(url=tiny.server.grpc_url, timeout_s=3.0, retry_interval_s=0.0)
    reference = track_with(tiny.local(), [scene_image(20), scene_image(21), scene_image(22)])
    remote.set_image(scene_image(1))
    condition = remote.segment(TASK_REQUESTS[Task.INSTANCE]).condition
    outcomes = []
    for index, frame in enumerate([scene_image(20), scene_image(21), scene_image(22)]):
        if index == 1:
            tiny.server.kill()
        if index == 2:
            tiny.server.restart()
        remote.set_image(frame)
        result = remote.decode(condition)
        outcomes.append(remote.stages.using_fallback)
        assert [i.label for i in result.instances] == [i.label for i in reference[index].instances]
        assert all(np.array_equal(a.mask, b.mask) for a, b in zip(result.instances, reference[index].instances))
    assert outcomes == [False, True, False]
    messages = [r.getMessage() for r in caplog.records if r.name == "xsam_engine.backends.triton_stages"]
    assert any("Running the image stages locally" in m for m in messages) and any("is back" in m for m in messages)


def test_unreachable_server_fails_at_start_unless_fallback_is_asked(tiny):
    port = free_port()  # nothing listens there
    with pytest.raises(RuntimeError, match=rf"grpc://127\.0\.0\.1:{port} is unreachable"):
        create_predictor(backend="triton", device="cpu", model=tiny.model, tokenizer=tiny.tokenizer,
                         triton_url=f"127.0.0.1:{port}", triton_timeout_s=2.0, log=False)
    predictor, info = create_predictor(backend="triton", device="cpu", model=tiny.model, tokenizer=tiny.tokenizer,
                                       triton_url=f"127.0.0.1:{port}", triton_timeout_s=2.0, triton_fallback=True,
                                       engine_cache_dir=tiny.onnx_dir.parent / "cache", log=False)
    assert info.backend == "triton" and info.fallback and info.local_backend == "torch"
    assert f"127.0.0.1:{port} is unreachable" in info.reason
    predictor.set_image(scene_image(1))
    assert predictor.stages.using_fallback
    expected = XSamPredictor(tiny.model, tiny.tokenizer)
    expected.set_image(scene_image(1))
    request = TASK_REQUESTS[Task.REFERRING]
    assert [i.score for i in predictor.segment(request).instances] == pytest.approx(
        [i.score for i in expected.segment(request).instances], abs=1e-5)


def test_a_server_that_never_answers_times_out_naming_it(tiny):
    with socket.socket() as silent:  # accepts TCP connections, never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(TritonUnavailableError, match=rf"grpc://{url} did not answer .* within 1.5 s"):
            TritonStages(tiny.model.config, TritonOptions(url=url, timeout_s=1.5))
        assert time.monotonic() - started < 5


def test_missing_model_and_foreign_weights_are_named(tiny, tmp_path):
    other, _ = tiny_model_and_tokenizer(seed=1)
    with pytest.raises(RuntimeError, match="serves graphs of other weights: .*mask_encoder"):
        TritonStages(other.config, TritonOptions(url=tiny.server.grpc_url), fingerprint=model_fingerprint(other))
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("mask_encoder", "vision_encoder", "pixel_decoder", "mask_decoder", "xsam_frame"):
        (partial / name).symlink_to(tiny.repository / name)
    with LocalTritonServer(partial) as server:
        with pytest.raises(RuntimeError, match=rf"grpc://{server.grpc_url} has no ready model\(s\) \['region_encoder'\]"):
            TritonStages(tiny.model.config, TritonOptions(url=server.grpc_url))


def test_two_client_processes_share_one_server(tiny, tmp_path):
    import tritonclient.grpc as grpcclient

    frames = 4
    client = grpcclient.InferenceServerClient(tiny.server.grpc_url)

    def counts() -> tuple[int, int]:
        stats = [client.get_inference_statistics(m, as_json=True)["model_stats"][0] for m in ("mask_encoder", "xsam_frame")]
        return tuple(int(s.get("inference_count", 0)) for s in stats)

    before = counts()
    outputs = [tmp_path / f"client{i}.json" for i in range(2)]
    script = Path(__file__).with_name("triton_client_process.py")
    processes = [subprocess.Popen([sys.executable, str(script), tiny.server.grpc_url, str(frames), str(out)])
                 for out in outputs]
    for process in processes:
        assert process.wait(timeout=240) == 0
    expected = track(tiny.local(), frames)
    for out in outputs:
        assert json.loads(out.read_text())["frames"] == expected
    # Per client: the command frame runs xsam_frame once and mask_encoder once more for the LLM's
    # SAM tokens; each tracked frame runs xsam_frame (whose first step is mask_encoder) once.
    after = counts()
    assert after[1] - before[1] == 2 * (1 + frames)
    assert after[0] - before[0] == 2 * (1 + 1 + frames)
    client.close()


def test_grpc_tls_with_the_servers_certificate(tiny, tmp_path):
    # A self-signed certificate for 127.0.0.1; the server speaks TLS on gRPC, the client trusts that certificate.
    key, cert = tmp_path / "server.key", tmp_path / "server.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    tls = ("--grpc-use-ssl=true", f"--grpc-server-cert={cert}", f"--grpc-server-key={key}")
    with LocalTritonServer(tiny.repository, extra_args=tls) as server:
        options = TritonOptions(url=server.grpc_url, ssl=True, root_certificates=str(cert), timeout_s=10.0)
        assert options.display == f"grpcs://{server.grpc_url}"
        stages = TritonStages(tiny.model.config, options, fingerprint=model_fingerprint(tiny.model))
        remote = XSamPredictor(tiny.model, tiny.tokenizer, stages=stages)
        _assert_same_masks(tiny.local(), remote, [scene_image(4)], tasks=(Task.REFERRING,))
        with pytest.raises(TritonUnavailableError, match=rf"grpc://{server.grpc_url}"):  # plaintext to a TLS port
            TritonStages(tiny.model.config, TritonOptions(url=server.grpc_url, timeout_s=3.0))
