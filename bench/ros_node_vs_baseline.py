"""This checkout's node against an earlier commit's, side by side in one run (bench/ros_node.py in both).

A restructuring must not make the node slower (issues 12 and 13: no regression beyond 5 %). This
script runs `bench/ros_node.py` of two checkouts, each with its own virtual environment, in
alternating rounds (A B A B ...), so that both see the same machine load, and compares the
medians over rounds of the figures a user feels:

  overhead_<size>_ms      ROS work per frame around inference (deserialise, convert, build the
                          result message, serialise, publish), p50 per run
  tracked_<model>_<size>  end-to-end latency of a tracked frame (camera message in -> result out)
  first_<model>_<size>    the first frame of a command (language model included)

    python bench/ros_node_vs_baseline.py --baseline /path/to/old/checkout [--rounds 3]

The baseline checkout needs its own `make setup` (.venv). Results:
bench/results/ros_node_vs_baseline.json and .png: ratio this / baseline per figure (median over
rounds). A figure more than 5 % slower counts as a regression only if even this checkout's best
round is slower than the baseline's worst (orange in the plot: over 5 % but within the noise of
the rounds; red: a regression).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1.05  # issues 12 / 13: at most 5 % slower


def figures(report: dict) -> dict[str, float]:
    """The compared figures (milliseconds) of one bench/ros_node.py report."""
    out: dict[str, float] = {}
    for entry in report.get("overhead", []):
        out[f"overhead_{entry['size']}_ms"] = float(entry["total_p50_ms"])
    for model in report.get("end_to_end", []):
        name = "tiny" if model["model"].startswith("tiny") else "tabletop"
        for size in model["sizes"]:
            out[f"tracked_{name}_{size['size']}_ms"] = float(size["tracked_frame"]["p50_ms"])
            out[f"first_{name}_{size['size']}_ms"] = float(size["first_frame_with_llm_ms"])
    return out


def run_once(checkout: Path, output: Path, repeats: int, frames: int) -> dict[str, float]:
    """Run `bench/ros_node.py` of `checkout` with that checkout's .venv; return its figures."""
    python = checkout / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{checkout}: no .venv (run `make setup` there first)")
    command = [str(python), "bench/ros_node.py", "--repeats", str(repeats), "--frames", str(frames),
               "--output", str(output)]
    # The checkout's own environment only: this process's venv set LD_LIBRARY_PATH and
    # AMENT_PREFIX_PATH (where rclpy finds the message libraries) and marked the ROS wheels'
    # bootstrap done; the other checkout would otherwise load this checkout's message libraries.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "AMENT_PREFIX_PATH", "LD_LIBRARY_PATH", "CMAKE_PREFIX_PATH",
                        "_ROS_WHEELS_BOOTSTRAP_COMPLETE")}
    done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: bench/ros_node.py failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return figures(json.loads(output.read_text()))


def git_head(checkout: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def compare(baseline_runs: list[dict[str, float]], current_runs: list[dict[str, float]]) -> list[dict]:
    """Median over rounds per figure, and the ratio current / baseline."""
    rows = []
    for key in sorted(set(baseline_runs[0]) & set(current_runs[0])):
        old = statistics.median(run[key] for run in baseline_runs)
        new = statistics.median(run[key] for run in current_runs)
        baseline_values = [run[key] for run in baseline_runs]
        current_values = [run[key] for run in current_runs]
        slower = new > TOLERANCE * old
        # Slower beyond the noise: even this checkout's best round is slower than the baseline's worst.
        beyond_noise = slower and min(current_values) > max(baseline_values)
        rows.append({"figure": key, "baseline_ms": round(old, 3), "current_ms": round(new, 3),
                     "ratio": round(new / old, 3), "within_5_percent": not slower,
                     "regression": beyond_noise,
                     "spread": round((max(baseline_values) - min(baseline_values)) / old, 3),
                     "baseline_rounds": [round(run[key], 3) for run in baseline_runs],
                     "current_rounds": [round(run[key], 3) for run in current_runs]})
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    names = [row["figure"] for row in rows]
    ratios = [row["ratio"] for row in rows]
    colours = ["tab:green" if row["within_5_percent"] else "tab:red" if row["regression"] else "tab:orange"
               for row in rows]
    ax.barh(names, ratios, color=colours)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.axvline(TOLERANCE, color="tab:red", linestyle="--", linewidth=1, label="+5 % (limit)")
    for y, row in enumerate(rows):
        ax.text(row["ratio"], y, f"  {row['baseline_ms']:.1f} -> {row['current_ms']:.1f} ms", va="center", fontsize=8)
    ax.set_xlabel("this checkout / baseline (median over rounds; < 1 is faster; orange: > 5 % within noise)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", required=True, help="checkout of the earlier commit (with its own .venv)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (each runs both checkouts)")
    parser.add_argument("--repeats", type=int, default=50, help="bench/ros_node.py --repeats")
    parser.add_argument("--frames", type=int, default=10, help="bench/ros_node.py --frames")
    parser.add_argument("--output", default=str(RESULTS / "ros_node_vs_baseline.json"))
    args = parser.parse_args(argv)
    baseline = Path(args.baseline).resolve()
    load_before = os.getloadavg()
    baseline_runs, current_runs = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(args.rounds):
            for checkout, runs in ((baseline, baseline_runs), (ROOT, current_runs)):
                runs.append(run_once(checkout, Path(scratch) / f"{len(runs)}_{checkout.name}.json",
                                     args.repeats, args.frames))
                print(f"round {index + 1}/{args.rounds} {checkout}: done", flush=True)
    rows = compare(baseline_runs, current_runs)
    report = {
        "benchmark": "bench/ros_node.py of this checkout against a baseline checkout, alternating rounds",
        "command": "python bench/ros_node_vs_baseline.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(), "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "baseline_commit": git_head(baseline), "current_commit": git_head(ROOT), "rounds": args.rounds,
        "tolerance": TOLERANCE, "all_within_5_percent": all(row["within_5_percent"] for row in rows),
        "regressions": [row["figure"] for row in rows if row["regression"]],
        "figures": rows,
    }
    output = Path(args.output)
    output.write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, output.with_suffix(".png"),
         f"bench/ros_node.py: {report['current_commit']} vs {report['baseline_commit']} ({args.rounds} rounds)")
    for row in rows:
        print(f"{row['figure']:32s} {row['baseline_ms']:9.2f} -> {row['current_ms']:9.2f} ms  x{row['ratio']:.3f}"
              + ("" if row["within_5_percent"] else "  SLOWER beyond noise" if row["regression"]
                 else "  over 5 % but within the rounds' spread"))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
