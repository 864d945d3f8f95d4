"""Print the README's benchmark tables (Markdown) from the committed JSON results.

    python bench/summarize.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, format_table  # noqa: E402


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def parity_table(report: dict) -> str:
    rows = []
    for result in report["results"]:
        for graph in result["graphs"]:
            rows.append({"config": result["config"].split(" (")[0], "graph": graph["graph"],
                         "outputs": ", ".join(f"{k} {v:.1e}" for k, v in graph["max_abs_error"].items()),
                         "mb": graph["onnx_mb"], "trt": "ok" if not graph["tensorrt_problems"] else "; ".join(graph["tensorrt_problems"])})
    table = format_table(rows, [("config", "config"), ("graph", "graph"), ("max abs error per output", "outputs"),
                                ("ONNX MB", "mb"), ("TensorRT ops/dtypes", "trt")])
    summary = format_table(
        [{"config": r["config"].split(" (")[0], "iou": r["min_final_mask_iou"], "all": r["min_all_query_mask_iou"],
          "n": len(r["requests"]), "rss": r["peak_rss_gb"], "export": r["export_seconds"], "ok": r["passed"]}
         for r in report["results"]],
        [("config", "config"), ("min final-mask IoU", "iou"), ("min all-query mask IoU", "all"),
         ("request/frame pairs", "n"), ("peak RSS GB", "rss"), ("export s", "export"), ("passed", "ok")])
    return table + "\n\n" + summary


def backends_table(report: dict) -> str:
    rows = [r for r in report["rows"]]
    table = format_table(rows, [("config", "config"), ("backend", "backend"), ("device", "device"), ("stage", "stage"),
                                ("p50 ms", "p50_ms"), ("p95 ms", "p95_ms"), ("runs/s", "throughput_per_s"),
                                ("GFLOP", "gflop"), ("x roofline", "x_roofline"), ("peak RSS MB", "peak_memory_mb"),
                                ("note", "note")])
    extra = []
    for result in report["results"]:
        prefill = result["llm_prefill"]
        extra.append({
            "config": result["config"], "backend": result["backend"],
            "tracking": result["tracking_frame"]["p50_ms"], "ratio": result["tracking_vs_stages"]["ratio"],
            "command": result["command_to_masks_referring"]["p50_ms"],
            "prefill": prefill.get("scaled_to_32_layers_p50_ms", prefill["p50_ms"]),
            "prefill_x": prefill.get("x_roofline"),
            "calls": ", ".join(f"{k} {v}" for k, v in result["llm_forward_calls"].items()) or "-",
        })
    table2 = format_table(extra, [("config", "config"), ("backend", "backend"), ("tracking frame p50 ms", "tracking"),
                                  ("tracking / (encoder + decoders)", "ratio"), ("command -> masks p50 ms", "command"),
                                  ("LLM prefill p50 ms", "prefill"), ("prefill x roofline", "prefill_x"),
                                  ("LLM forward calls per task", "calls")])
    return table + "\n\n" + table2


def ros_table(report: dict) -> str:
    rows = [{"size": r["size"], "n": r["instances"], "mb": round(r["result_bytes"] / 1e6, 2),
             "de": r["deserialize_image"]["p50_ms"], "in": r["image_to_rgb"]["p50_ms"], "out": r["result_to_msg"]["p50_ms"],
             "pub": r["publish"]["p50_ms"], "total": r["total_p50_ms"], "p95": r["total"]["p95_ms"], "ok": r["meets_target"]}
            for r in report.get("overhead", [])]
    table = format_table(rows, [("frame", "size"), ("instances", "n"), ("result MB", "mb"), ("deserialise image", "de"),
                                ("image_to_rgb", "in"), ("result_to_msg", "out"), ("publish", "pub"),
                                ("total p50 ms", "total"), ("total p95 ms", "p95"), ("<= 5 ms", "ok")])
    e2e = []
    for model in report.get("end_to_end", []):
        for row in model["sizes"]:
            e2e.append({"model": model["model"], "size": row["size"], "first": row["first_frame_with_llm_ms"],
                        "p50": row["tracked_frame"]["p50_ms"], "p95": row["tracked_frame"]["p95_ms"],
                        "outside": (row["tracked_outside_node_stages"] or {}).get("p50_ms")})
    table2 = format_table(e2e, [("model", "model"), ("frame", "size"), ("first frame (LLM) ms", "first"),
                                ("tracked p50 ms", "p50"), ("tracked p95 ms", "p95"),
                                ("outside the node's stages p50 ms", "outside")])
    return table + "\n\n" + table2


def main() -> None:
    for name, render in (("onnx_parity.json", parity_table), ("backends_cpu.json", backends_table), ("ros_node.json", ros_table)):
        report = _load(name)
        if report is None:
            print(f"<!-- {name}: not there yet -->\n")
            continue
        print(f"### {name}\n\n`{report['command']}`\n")
        print(render(report))
        print()


if __name__ == "__main__":
    main()
