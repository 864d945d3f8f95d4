"""Triton Inference Server vs local: per-stage latency, bytes on the wire, one vs two clients, LLM placement.

One run, on this machine, with the shipped tabletop model:

1. per stage (mask encoder, pixel decoder, vision encoder, mask decoder with 3 conditions, region
   encoder, and the `xsam_frame` ensemble = a whole tracked frame on the server): p50/p95 of the local ONNX Runtime backend vs the triton backend over gRPC and HTTP
   (a Triton 2.51 server on 127.0.0.1 from nvidia-pytriton, the graphs in ONNX Runtime inside its
   Python backend), the bytes sent and received per call, and the server's own time per call
   (Triton's statistics: queue + compute), so that client time - server time = transport and
   client overhead;
2. a tracked frame end to end (`set_image` + `decode`) per backend, Triton with the `xsam_frame`
   ensemble and with one call per stage;
3. throughput of one client process vs two client processes sharing the server (tracked frames),
   with the server's batching statistics (executions vs inferences);
4. for the released configuration (computed from the graph shapes, float32 on the wire): bytes
   per frame per stage, their transfer time at 1 / 10 / 25 Gbit/s, and the LLM placement numbers
   (parameter count on the meta device; bytes per command with the LLM on the robot vs on the
   server).

    python bench/triton_serving.py                      # ~5 min on 2 cores
    python bench/triton_serving.py --repeats 5 --frames 5

(Not `bench/triton.py`: a module named `triton` next to the other benchmarks would shadow the
Triton compiler package that `torch.compile` imports in bench/gpu_all.py.)

Results: bench/results/triton.json and triton.png (the load average is recorded: the numbers
are only comparable on a quiet machine).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import RESULTS, latency_stats, machine_info, time_call  # noqa: E402

STAGES = ("mask_encoder", "pixel_decoder", "vision_encoder", "mask_decoder", "region_encoder", "xsam_frame")
LINKS_GBIT = (1, 10, 25)


def _load_model():
    import torch

    from xsam_engine.checkpoint import load_pretrained

    return load_pretrained(None, device="cpu", dtype=torch.float32)


def _scene(seed: int):
    from xsam_engine.tabletop.scenes import generate_scene

    return generate_scene(seed, width=640, height=480).image


def _server_seconds(client, name: str) -> dict:
    """Cumulative server-side seconds for a model: queue, compute (input + infer + output), counts."""
    stats = client.get_inference_statistics(name, as_json=True)["model_stats"][0]
    inference = stats.get("inference_stats", {})

    def ns(key: str) -> float:
        return int(inference.get(key, {}).get("ns", 0)) / 1e9

    return {
        "queue": ns("queue"),
        "compute": ns("compute_input") + ns("compute_infer") + ns("compute_output"),
        "inferences": int(stats.get("inference_count", 0)),
        "executions": int(stats.get("execution_count", 0)),
    }


def _delta(after: dict, before: dict) -> dict:
    return {k: after[k] - before[k] for k in after}


def stage_latency(model, server, repeats: int) -> list[dict]:
    import tritonclient.grpc as grpcclient

    from xsam_engine.backends import OnnxRuntimeStages, ensure_onnx
    from xsam_engine.backends.triton_stages import TritonOptions, TritonStages
    from xsam_engine.export.verify import reference_inputs

    feeds = reference_inputs(model, _scene(3))
    decoder = feeds["mask_decoder"]
    feeds["xsam_frame"] = {"pixel_values": feeds["mask_encoder"]["pixel_values"],
                           "condition_embeds": decoder["condition_embeds"], "seg_embeds": decoder["seg_embeds"]}
    onnx_dir = ensure_onnx(model, Path(server.workdir) / "onnx")
    backends = {
        "local onnxruntime": OnnxRuntimeStages(onnx_dir, model.config),
        "triton grpc": TritonStages(model.config, TritonOptions(url=server.grpc_url, timeout_s=60)),
        "triton http": TritonStages(model.config, TritonOptions(url=server.http_url, protocol="http", timeout_s=60)),
    }
    stats_client = grpcclient.InferenceServerClient(server.grpc_url)
    local = backends["local onnxruntime"]

    def runner(stages, name: str):
        if name == "xsam_frame" and stages is local:  # the same three graphs, run here in turn
            frame = feeds[name]
            return lambda: local.decode(local.encode_pixels(local.encode_mask_image(frame["pixel_values"])),
                                        frame["condition_embeds"], frame["seg_embeds"])
        return lambda: stages.run_graph(name, **feeds[name])

    rows = []
    for name in STAGES:
        sent = sum(t.numel() * 4 for n, t in feeds[name].items() if n in backends["triton grpc"].model_inputs[name])
        received = sum(o.numel() * 4 for o in backends["triton grpc"].run_graph(name, **feeds[name]))
        for backend, stages in backends.items():
            run = runner(stages, name)
            time_call(run, 2, warmup=0)  # warm-up, outside the statistics
            before = _server_seconds(stats_client, name)
            times = time_call(run, repeats, warmup=0)
            row = {"stage": name, "backend": backend, **latency_stats(times), "bytes_sent": sent, "bytes_received": received}
            if backend != "local onnxruntime":
                delta = _delta(_server_seconds(stats_client, name), before)
                calls = max(delta["inferences"], 1)
                row["server_ms_per_call"] = round(1000 * (delta["queue"] + delta["compute"]) / calls, 3)
                row["client_minus_server_ms"] = round(row["mean_ms"] - row["server_ms_per_call"], 3)
            rows.append(row)
            print(f"{name:15s} {backend:18s} p50 {row['p50_ms']:8.2f} ms  "
                  f"server {row.get('server_ms_per_call', 0):7.2f} ms  {sent + received:>10,d} B", flush=True)
    stats_client.close()
    return rows


def tracked_frames(model, tokenizer, server, frames: int) -> list[dict]:
    from xsam_engine.backends import OnnxRuntimeStages, ensure_onnx
    from xsam_engine.backends.triton_stages import TritonOptions, TritonStages
    from xsam_engine.predictor import XSamPredictor
    from xsam_engine.requests import SegmentationRequest, Task

    onnx_dir = ensure_onnx(model, Path(server.workdir) / "onnx")
    request = SegmentationRequest(Task.INSTANCE, vocabulary=("cup", "bowl", "plate"))
    rows = []
    for backend, stages in (
        ("local onnxruntime", OnnxRuntimeStages(onnx_dir, model.config)),
        ("triton grpc", TritonStages(model.config, TritonOptions(url=server.grpc_url, timeout_s=60))),
        ("triton http", TritonStages(model.config, TritonOptions(url=server.http_url, protocol="http", timeout_s=60))),
        ("triton grpc, one call per stage",
         TritonStages(model.config, TritonOptions(url=server.grpc_url, timeout_s=60, frame_ensemble=False))),
    ):
        predictor = XSamPredictor(model, tokenizer, stages=stages)
        predictor.set_image(_scene(1))
        condition = predictor.segment(request).condition
        images = [_scene(10 + i) for i in range(frames)]
        index = iter(range(10**9))

        def frame() -> None:
            predictor.set_image(images[next(index) % frames])
            predictor.decode(condition)

        rows.append({"backend": backend, **latency_stats(time_call(frame, frames, warmup=1))})
        print(f"tracked frame   {backend:32s} p50 {rows[-1]['p50_ms']:8.2f} ms", flush=True)
    return rows


def worker(url: str, frames: int, out: str) -> int:
    """One client process: track a condition over `frames` frames through the server."""
    from xsam_engine.backends import create_predictor
    from xsam_engine.requests import SegmentationRequest, Task

    model, tokenizer = _load_model()
    predictor, _ = create_predictor(backend="triton", device="cpu", model=model, tokenizer=tokenizer,
                                    triton_url=url, triton_timeout_s=120, log=False)
    predictor.set_image(_scene(1))
    condition = predictor.segment(SegmentationRequest(Task.INSTANCE, vocabulary=("cup", "bowl", "plate"))).condition
    images = [_scene(10 + i) for i in range(frames)]
    Path(out + ".ready").touch()
    while not Path(out + ".go").exists():
        time.sleep(0.01)
    start = time.perf_counter()
    for image in images:
        predictor.set_image(image)
        predictor.decode(condition)
    Path(out).write_text(json.dumps({"frames": frames, "seconds": time.perf_counter() - start}))
    return 0


def shared_server(server, frames: int) -> list[dict]:
    import tritonclient.grpc as grpcclient

    stats_client = grpcclient.InferenceServerClient(server.grpc_url)
    rows = []
    for clients in (1, 2):
        with tempfile.TemporaryDirectory() as scratch:
            outs = [str(Path(scratch) / f"client{i}.json") for i in range(clients)]
            processes = [subprocess.Popen([sys.executable, __file__, "--worker", server.grpc_url, str(frames), out])
                         for out in outs]
            deadline = time.monotonic() + 300
            while not all(Path(o + ".ready").exists() for o in outs):
                if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in processes):
                    raise RuntimeError("a client process did not get ready")
                time.sleep(0.05)
            before = _server_seconds(stats_client, "mask_encoder")
            start = time.perf_counter()
            for out in outs:
                Path(out + ".go").touch()
            for process in processes:
                if process.wait(timeout=600) != 0:
                    raise RuntimeError("a client process failed")
            wall = time.perf_counter() - start
            delta = _delta(_server_seconds(stats_client, "mask_encoder"), before)
            per_client = [json.loads(Path(o).read_text()) for o in outs]
        rows.append({
            "clients": clients,
            "frames_total": clients * frames,
            "wall_s": round(wall, 3),
            "frames_per_s_total": round(clients * frames / wall, 3),
            "frames_per_s_per_client": [round(c["frames"] / c["seconds"], 3) for c in per_client],
            "mask_encoder_inferences": delta["inferences"],
            "mask_encoder_executions": delta["executions"],
        })
        print(f"{clients} client(s): {rows[-1]['frames_per_s_total']:.2f} frames/s total, mask_encoder "
              f"{delta['inferences']} inferences in {delta['executions']} executions", flush=True)
    stats_client.close()
    return rows


def released_numbers() -> dict:
    """Bytes on the wire per stage for the released configuration and the LLM placement figures."""
    import torch

    from xsam_engine.configuration_xsam import XSamConfig
    from xsam_engine.export.graphs import graph_specs
    from xsam_engine.modeling_xsam import XSamModel

    config = XSamConfig.released()
    sizes = {"num_conditions": 1, "num_classes": 2, "num_points": config.sampler_num_points, "batch": 1}
    stages = {}
    for name, spec in graph_specs(config).items():
        sent = sum(4 * math.prod(t.concrete_shape(sizes)) for t in spec.inputs)
        received = sum(4 * math.prod(t.concrete_shape(sizes)) for t in spec.outputs)
        stages[name] = {"bytes_sent": sent, "bytes_received": received}
    frame = {"bytes_sent": stages["mask_encoder"]["bytes_sent"] + stages["mask_decoder"]["bytes_sent"]
             - sum(4 * math.prod(t.concrete_shape(sizes)) for t in graph_specs(config)["pixel_decoder"].outputs),
             "bytes_received": stages["mask_decoder"]["bytes_received"]}
    stages["xsam_frame"] = frame  # pixels + condition up, logits down
    per_stage = sum(stages[n]["bytes_sent"] + stages[n]["bytes_received"] for n in ("mask_encoder", "pixel_decoder", "mask_decoder"))
    per_frame = frame["bytes_sent"] + frame["bytes_received"]
    with torch.device("meta"):
        model = XSamModel(config)
    llm_params = sum(p.numel() for p in model.language_model.parameters())
    hidden = config.language.hidden_size
    image_tokens = config.vision.num_tokens + config.mask_encoder.num_tokens
    return {
        "stages": stages,
        "tracked_frame_bytes": {"xsam_frame ensemble": per_frame, "one call per stage": per_stage},
        "tracked_frame_ms_at_gbit": {
            "xsam_frame ensemble": {g: round(per_frame * 8 / (g * 1e9) * 1000, 1) for g in LINKS_GBIT},
            "one call per stage": {g: round(per_stage * 8 / (g * 1e9) * 1000, 1) for g in LINKS_GBIT},
        },
        "llm": {
            "parameters": llm_params,
            "bf16_gb": round(llm_params * 2 / 1e9, 2),
            "image_tokens": image_tokens,
            "robot_llm_bytes_per_command": image_tokens * hidden * 4,
            "server_llm_bytes_per_command": "prompt ids up (~1 KB) + conditions down (C x 256 x 4 B: 1 KB per condition)",
        },
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    backends = ("local onnxruntime", "triton grpc", "triton http")
    width = 0.27
    for offset, backend in enumerate(backends):
        values = [next(r["p50_ms"] for r in result["stages"] if r["stage"] == s and r["backend"] == backend) for s in STAGES]
        axes[0].bar([i + (offset - 1) * width for i in range(len(STAGES))], values, width, label=backend)
    axes[0].set_xticks(range(len(STAGES)), [s.replace("_", "\n") for s in STAGES], fontsize=8)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("p50 ms per call")
    axes[0].set_title("per stage, shipped model, 127.0.0.1")
    axes[0].legend(fontsize=8)
    shared = result["shared_server"]
    axes[1].bar([f"{r['clients']} client(s)" for r in shared], [r["frames_per_s_total"] for r in shared], color="tab:green")
    axes[1].set_ylabel("tracked frames/s, all clients")
    axes[1].set_title("one server shared by client processes")
    released = result["released"]["stages"]
    names = list(released)
    axes[2].barh(names, [released[n]["bytes_sent"] / 1e6 for n in names], label="to server")
    axes[2].barh(names, [released[n]["bytes_received"] / 1e6 for n in names],
                 left=[released[n]["bytes_sent"] / 1e6 for n in names], label="from server")
    axes[2].set_xlabel("MB per call (released config, float32)")
    axes[2].set_title("bytes on the wire per stage")
    axes[2].legend(fontsize=8)
    figure.suptitle(f"Triton vs local on a 2-core CPU (load average {result['load_average_before'][0]:.1f} at start)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--frames", type=int, default=15)
    parser.add_argument("--worker", nargs=3, metavar=("URL", "FRAMES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker[0], int(args.worker[1]), args.worker[2])

    from xsam_engine.triton.local_server import LocalTritonServer
    from xsam_engine.triton.repository import RepositoryOptions, write_triton_repository

    load_before = os.getloadavg()
    model, tokenizer = _load_model()
    with tempfile.TemporaryDirectory() as scratch:
        repository = Path(scratch) / "repository"
        write_triton_repository(model, repository, RepositoryOptions(platform="python", max_queue_delay_us=2000))
        with LocalTritonServer(repository) as server:
            result = {
                "machine": machine_info(),
                "load_average_before": [round(v, 2) for v in load_before],
                "model": "shipped tabletop default (xsam_engine/default_model)",
                "server": "tritonserver 2.51 (nvidia-pytriton 0.7.0), Python backend running ONNX Runtime (CPU), 127.0.0.1",
                "stages": stage_latency(model, server, args.repeats),
                "tracked_frame": tracked_frames(model, tokenizer, server, args.frames),
                "shared_server": shared_server(server, args.frames),
            }
    result["released"] = released_numbers()
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "triton.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS / "triton.png")
    print(f"wrote {RESULTS / 'triton.json'} and triton.png; load average {result['load_average_before']} -> "
          f"{result['load_average_after']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
