"""bench/gpu_all.py, the one-shot GPU benchmark: its dry run of every section (tiny config, CPU),
its time limits, its signal handling and watchdog, and its pure helpers.

The dry run executes the same section functions as the GPU run (`torch.compile` with the
`aot_eager` backend instead of inductor, which needs minutes of C++ compilation on this CPU;
`scripts/check_gpu_bench_compat.sh` runs inductor under the GPU machine's library versions).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SCRIPT = BENCH / "gpu_all.py"


sys.path.insert(0, str(BENCH))
import common  # noqa: E402  (bench/common.py, as gpu_all.py itself imports it)
import gpu_all  # noqa: E402  importing must not touch a GPU or start measuring


def _env() -> dict:
    """The test's environment plus a dead proxy: any attempt to reach the network fails at once."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    env.pop("HF_HUB_OFFLINE", None)  # the script must set offline mode itself
    return env


class _LineReader:
    """Collects a process's stdout lines on a thread, so a test can wait for one line.

    Selecting on `process.stdout` and then calling `readline` loses lines: one `read` can pull two
    lines into the file object's buffer, `select` then waits on an empty pipe, and the second line
    is seen only when the process prints again (a whole section later).
    """

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._closed = False
        self._new = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._new:
                self.lines.append(line)
                self._new.notify_all()
        with self._new:
            self._closed = True
            self._new.notify_all()

    def wait_for(self, needle: str, timeout: float) -> None:
        """Return once a line containing `needle` has been printed; AssertionError after `timeout` s."""
        with self._new:
            found = self._new.wait_for(lambda: self._closed or any(needle in line for line in self.lines), timeout)
            if not found or not any(needle in line for line in self.lines):
                raise AssertionError(f"{needle!r} not printed within {timeout} s; got:\n{''.join(self.lines)}")

    def text(self, timeout: float = 10.0) -> str:
        """Everything printed, after the stream closed (or `timeout` s)."""
        self._thread.join(timeout)
        return "".join(self.lines)


# -- pure helpers ------------------------------------------------------------------------------


def test_arguments_and_profiles():
    gpu = gpu_all.make_profile(gpu_all.parse_args([]))
    assert (gpu.name, gpu.device, gpu.dtype, gpu.repeats, gpu.budget_s) == ("gpu", "cuda", "bfloat16", 20, 540.0)
    assert (gpu.prefill_tokens, gpu.decode_tokens, gpu.frame_size, gpu.compile_backend) == (1800, 32, (1280, 720), "inductor")
    assert gpu.sections == gpu_all.SECTION_NAMES
    dry = gpu_all.make_profile(gpu_all.parse_args(["--dry-run"]))
    assert (dry.device, dry.dtype, dry.repeats, dry.compile_backend, dry.prefill_tokens) == ("cpu", "bfloat16", 3, "aot_eager", 48)
    # Only sizes, device, repeats, budget and the compile backend differ; the sections are the same.
    assert dry.sections == gpu.sections
    args = gpu_all.parse_args(["--dtype", "float16", "--repeats", "5", "--skip-tensorrt", "--skip-compile", "--budget-s", "300",
                               "--section-limit", "decode_compiled=30", "--sections", "predictor,build,tensorrt"])
    profile = gpu_all.make_profile(args)
    assert (profile.dtype, profile.repeats, profile.budget_s) == ("float16", 5, 300.0)
    assert profile.sections == ("build", "predictor")  # fixed order; tensorrt removed by --skip-tensorrt
    assert profile.limit(gpu_all.SECTIONS[gpu_all.SECTION_NAMES.index("decode_compiled")]) == 30.0
    assert profile.limit(gpu_all.SECTIONS[0]) == gpu_all.SECTIONS[0].gpu_limit_s
    for bad in (["--repeats", "0"], ["--decode-tokens", "0"], ["--budget-s", "0"], ["--sections", "encoders,warp"],
                ["--section-limit", "decode=abc"], ["--section-limit", "nosuch=3"], ["--section-limit", "decode=-1"]):
        with pytest.raises(SystemExit):
            gpu_all.parse_args(bad)


def test_default_plan_fits_the_one_shot_machine():
    """The GPU run's estimates fit its default budget (540 s, under `timeout 580`), every limit is
    finite, and the eager sections (every target's first number) come before the compiles."""
    profile = gpu_all.make_profile(gpu_all.parse_args([]))
    estimates = sum(plan.gpu_estimate_s for plan in gpu_all.SECTIONS if plan.name != "tensorrt")
    assert estimates <= profile.budget_s - profile.reserve_s  # 405 s <= 520 s
    assert profile.budget_s < 580
    order = list(gpu_all.SECTION_NAMES)
    assert max(order.index(n) for n in ("encoders", "seg_decoder", "prefill", "decode", "predictor")) < min(
        order.index(n) for n in gpu_all.COMPILE_SECTIONS)


def test_gpu_names_become_file_names():
    assert gpu_all.gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu_all.gpu_slug("NVIDIA H200") == "nvidia-h200"
    assert gpu_all.gpu_slug("Orin (nvgpu)") == "orin-nvgpu"
    assert gpu_all.device_peaks("NVIDIA H100 80GB HBM3")["fp16_tflops"] == 989.4
    assert gpu_all.device_peaks("NVIDIA H200")["bandwidth_gbs"] == 4800.0  # SXM: same compute as H100, 4.8 TB/s
    assert gpu_all.device_peaks("NVIDIA H200 NVL")["fp16_tflops"] == 835.5
    assert gpu_all.device_peaks("NVIDIA GeForce RTX 4090") is None


def test_targets_and_roofline_multiples():
    metrics = {"sam_encoder_ms": 5.0, "decode_ms_per_token": 4.86, "tracking_fps": 120.0, "command_to_masks_ms": None}
    rows = {row["metric"]: row for row in gpu_all.evaluate_targets(metrics, 989.4, 3350.0)}
    sam = rows["sam_encoder_ms"]
    assert sam["meets_target"] is True and sam["meets_goal"] is False  # <= 6 ms issue target, > 3.5 ms stretch
    assert sam["roofline_ms"] == pytest.approx(3.154, abs=0.001) and sam["x_roofline"] == pytest.approx(1.585, abs=0.01)
    assert rows["decode_ms_per_token"]["meets_target"] is False  # 4.86 ms > 3.5 ms
    decode = rows["decode_ms_per_token"]
    assert decode["roofline_ms"] == pytest.approx(2.433, abs=0.001) and decode["x_roofline"] == pytest.approx(2.0, abs=0.01)
    tracking = rows["tracking_fps"]
    assert tracking["meets_target"] is True and tracking["meets_goal"] is False  # >= 100 fps, < 200 fps
    assert rows["command_to_masks_ms"]["meets_target"] is None and rows["command_to_masks_ms"]["x_roofline"] is None
    text = gpu_all.format_rows(list(rows.values()))
    assert "sam_encoder_ms" in text and "NO" in text and "yes" in text


def test_budget_counts_the_reserve():
    budget = common.Budget(seconds=100.0, reserve_s=20.0)
    assert budget.allows(10.0) and budget.allows(79.0)
    assert not budget.allows(81.0)  # 100 s - 20 s reserve - elapsed
    assert not budget.allows(1000.0)
    assert 79.0 < budget.remaining() <= 80.0


def test_static_cache_config_is_full_attention_below_the_window():
    from transformers import Phi3Config

    config = Phi3Config(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                        vocab_size=100, sliding_window=2047)
    cache_config = gpu_all.full_attention_cache_config(config, 1843)
    assert cache_config.sliding_window is None and config.sliding_window == 2047  # a copy: the model keeps its window
    with pytest.raises(ValueError, match="sliding window"):
        gpu_all.full_attention_cache_config(config, 2100)


def test_compile_prerequisites_are_checked_before_compiling(monkeypatch, tmp_path):
    assert gpu_all.triton_launcher_prerequisite() is None  # gcc and Python.h exist on this machine
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler on PATH
    assert "needs a C compiler for its launcher" in gpu_all.triton_launcher_prerequisite()
    cpu_inductor = gpu_all.make_profile(gpu_all.parse_args(["--dry-run", "--compile-backend", "inductor"]))
    assert "needs a C++ compiler" in gpu_all.compile_prerequisite(cpu_inductor)
    assert gpu_all.compile_prerequisite(gpu_all.make_profile(gpu_all.parse_args(["--dry-run"]))) is None  # aot_eager
    monkeypatch.setenv("CC", "/usr/bin/gcc")
    include = tmp_path / "include"
    include.mkdir()
    monkeypatch.setattr("sysconfig.get_paths", lambda scheme=None: {"include": str(include)})
    assert f"{include}/Python.h is missing" in gpu_all.triton_launcher_prerequisite()


# -- guard rails, in this process with real sections -------------------------------------------


@pytest.fixture
def bench_run(tmp_path):
    args = gpu_all.parse_args(["--dry-run", "--budget-s", "60", "--output-dir", str(tmp_path)])
    run = gpu_all.BenchRun(args, gpu_all.make_profile(args), tmp_path)
    run.json_path = tmp_path / "gpu_probe.json"
    return run


def _on_disk(run) -> dict:
    return json.loads(run.json_path.read_text())


def test_sections_are_recorded_and_written_one_by_one(bench_run):
    plan = gpu_all.SectionPlan("probe", 1, 5, 1, 5)
    bench_run.run_section(plan, lambda context: {"value": 1})
    assert _on_disk(bench_run)["sections"]["probe"]["status"] == "ok"  # written before the next section starts

    def broken(context):
        raise ValueError("the probe broke")

    bench_run.run_section(gpu_all.SectionPlan("broken", 1, 5, 1, 5), broken)
    report = _on_disk(bench_run)
    assert report["sections"]["broken"]["status"] == "failed"
    assert "ValueError: the probe broke" in report["sections"]["broken"]["reason"]
    assert "Traceback" in report["errors"]["broken"] and "broken" in report["errors"]["broken"]
    # One section failing does not stop the next one, nor does a section that needs it run.
    bench_run.run_section(gpu_all.SectionPlan("after", 1, 5, 1, 5, needs=("broken",)), lambda context: {})
    bench_run.run_section(gpu_all.SectionPlan("independent", 1, 5, 1, 5, needs=("probe",)), lambda context: {})
    report = _on_disk(bench_run)
    assert report["sections"]["after"]["status"] == "skipped" and "broken" in report["sections"]["after"]["reason"]
    assert report["sections"]["independent"]["status"] == "ok"


def test_sections_that_would_overrun_are_skipped_with_the_reason(bench_run):
    ran = []
    for estimate in (54.0, 56.0, 1000.0):  # 60 s budget - 5 s reserve = 55 s available
        bench_run.run_section(gpu_all.SectionPlan(f"needs_{estimate:.0f}", 1, 5, estimate, 5), lambda context: ran.append(1))
    sections = _on_disk(bench_run)["sections"]
    assert sections["needs_54"]["status"] == "ok" and len(ran) == 1
    for name in ("needs_56", "needs_1000"):
        assert sections[name]["status"] == "skipped" and sections[name]["reason"].startswith("time budget: needs ~")


def test_missing_modules_skip_a_section_with_the_install_hint(bench_run):
    bench_run.run_section(gpu_all.SectionPlan("optional", 1, 5, 1, 5, modules=("no_such_module_xsam",)), lambda context: {})
    record = _on_disk(bench_run)["sections"]["optional"]
    assert record["status"] == "skipped"
    assert "needs the Python module no_such_module_xsam (pip install no_such_module_xsam)" in record["reason"]


def test_a_running_section_is_stopped_at_its_limit(bench_run):
    args = gpu_all.parse_args(["--dry-run", "--section-limit", "decode_compiled=0.3"])
    bench_run.profile = gpu_all.make_profile(args)
    progress = []

    def endless(context):  # like a torch.compile that never finishes: Python code that keeps going
        while True:
            progress.append(1)
            bench_run.details["partial"] = len(progress)
            time.sleep(0.01)

    plan = gpu_all.SECTIONS[gpu_all.SECTION_NAMES.index("decode_compiled")]
    plan = dataclasses.replace(plan, needs=())  # no model in this test
    bench_run.run_section(plan, endless)
    report = _on_disk(bench_run)
    assert report["sections"]["decode_compiled"]["status"] == "stopped"
    assert 0.3 <= report["sections"]["decode_compiled"]["seconds"] < 1.5
    assert "time limit of 0.3 s" in report["sections"]["decode_compiled"]["reason"]
    assert report["details"]["partial"] > 0  # what it measured before the stop is kept


def test_measurements_shorten_themselves_before_a_deadline():
    calls = []
    samples = gpu_all.measure(lambda: (calls.append(1), time.sleep(0.05)), repeats=1000, warmup=1, device="cpu",
                              stop_at=time.perf_counter() + 0.5)
    assert 3 <= len(samples) < 20  # ~0.45 s of 0.05 s calls, not 1000
    assert all(0.04 < s < 0.5 for s in samples)
    # At least one timed call even when the deadline has already passed.
    assert len(gpu_all.measure(lambda: None, repeats=10, warmup=0, device="cpu", stop_at=time.perf_counter() - 1)) == 1


def test_the_watchdog_ends_a_run_stuck_in_native_code(tmp_path):
    """A single native call (here a 0.4 TFLOP float64 matmul, as a hung CUDA sync would be) never
    returns to Python, so the section alarm cannot stop it; the watchdog writes and exits 0."""
    out = tmp_path / "status.json"
    code = textwrap.dedent(f"""
        import json, sys, time
        sys.path.insert(0, {str(BENCH)!r})
        import torch
        from common import RunGuard, atomic_write_text, time_limit
        start = time.perf_counter()
        guard = RunGuard(start + 2.0, lambda reason: atomic_write_text(
            __import__("pathlib").Path({str(out)!r}), json.dumps({{"status": reason, "at_s": time.perf_counter() - start}})))
        guard.start()
        a = torch.randn(6000, 6000, dtype=torch.float64)
        with time_limit(0.5):
            torch.mm(a, a)
        print("the matmul returned before the watchdog fired")
        sys.exit(3)
    """)
    started = time.monotonic()
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env())
    assert completed.returncode == 0, completed.stdout + completed.stderr
    status = json.loads(out.read_text())
    assert status["status"].startswith("hard deadline reached")
    assert 2.0 <= status["at_s"] < 6.0 and time.monotonic() - started < 60


# -- the dry run of every section ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("gpu_all_dry_run")
    started = time.monotonic()
    completed = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--output-dir", str(output)],
                               capture_output=True, text=True, timeout=600, cwd=ROOT, env=_env())
    elapsed = time.monotonic() - started
    report_path = output / "gpu_cpu-dry-run.json"
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed, json.loads(report_path.read_text()), output, elapsed


def test_dry_run_runs_every_section(dry_run):
    completed, report, _, elapsed = dry_run
    print(f"dry run: {elapsed:.1f} s wall")
    assert report["status"] == "complete" and report["profile"] == "dry-run" and report["errors"] == {}
    sections = report["sections"]
    assert list(sections) == list(gpu_all.SECTION_NAMES)
    for name in gpu_all.SECTION_NAMES[:-1]:
        assert sections[name]["status"] == "ok", (name, sections[name])
    # TensorRT is not installed here (nor on the first GPU machine): its import failure is a recorded skip.
    assert sections["tensorrt"]["status"] == "skipped"
    assert sections["tensorrt"]["reason"].startswith("needs the Python module tensorrt (pip install tensorrt)")
    metrics = report["metrics"]
    assert set(metrics) == {metric for metric, *_ in gpu_all.H100_TARGETS}
    assert all(value is not None and value > 0 for value in metrics.values()), metrics
    assert [row["metric"] for row in report["targets"]] == [metric for metric, *_ in gpu_all.H100_TARGETS]
    assert report["environment"]["hf_hub_offline"] == "1"


def test_dry_run_takes_the_gpu_code_paths(dry_run):
    _, report, _, _ = dry_run
    details = report["details"]
    assert details["build"]["config"] == "x-sam-tiny"
    assert details["prefill"]["tokens"] == 48 and details["decode_dynamic_cache"]["context_tokens"] == 48
    # The predictor was made by the public factory on the PyTorch backend and answered the command.
    assert "torch on cpu" in details["predictor"]["backend"] and "bfloat16" in details["predictor"]["backend"]
    assert details["predictor"]["frames"] == "tabletop scenes" and details["predictor"]["condition_labels"] == ["the red cup"]
    for key in ("mask_decoder_compiled", "decode_static_cache_compiled"):
        compiled = details[key]
        assert compiled["backend"] == "aot_eager" and compiled["runs"] >= 1
        assert compiled["counters"]["stats"]["unique_graphs"] >= 1  # dynamo really traced the function
    decode = details["decode_static_cache_compiled"]
    # One graph for every position: the static cache keeps its length in a tensor (no recompiles).
    assert decode["counters"]["stats"]["unique_graphs"] == 1
    assert decode["logits_vs_dynamic_cache"]["agrees"] and decode["logits_vs_dynamic_cache"]["same_argmax"]


def test_dry_run_prints_a_line_per_section_and_the_target_table(dry_run):
    completed, report, output, _ = dry_run
    for name in gpu_all.SECTION_NAMES:
        status = report["sections"][name]["status"]
        assert any(line.split("] ", 1)[-1].startswith(f"{name}: {status} in ") for line in completed.stdout.splitlines()), name
    assert gpu_all.format_rows(report["targets"]) in completed.stdout
    assert "status: complete" in completed.stdout
    assert (output / "gpu_cpu-dry-run.png").stat().st_size > 10_000 and report["plot"] == "gpu_cpu-dry-run.png"


def test_plot_only_redraws_a_results_file(dry_run, tmp_path):
    _, report, _, _ = dry_run
    path = tmp_path / "gpu_copy.json"
    path.write_text(json.dumps(report))
    assert gpu_all.main(["--plot-only", str(path)]) == 0
    assert path.with_suffix(".png").stat().st_size > 10_000


def test_interrupted_run_keeps_its_numbers(tmp_path):
    """Without cv2 / PIL / matplotlib, with a compile stopped at its limit, a measurement shortened
    by its section limit, then SIGTERM in the middle of a section: exit 0, and the JSON holds
    everything measured before, each section's fate and why."""
    runner = textwrap.dedent("""
        import runpy, sys
        sys.modules.update(cv2=None, PIL=None, matplotlib=None)  # as on a machine without them
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
    """)
    command = [sys.executable, "-c", runner, str(SCRIPT), "--dry-run", "--output-dir", str(tmp_path),
               "--sections", "build,prefill,predictor,decode_compiled,seg_decoder_compiled", "--repeats", "100000",
               "--section-limit", "prefill=4", "--section-limit", "decode_compiled=0.5",
               "--section-limit", "seg_decoder_compiled=100"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=_env())
    try:
        reader = _LineReader(process)
        reader.wait_for("] seg_decoder_compiled ...", timeout=300)
        time.sleep(1.0)  # inside torch.compile's tracing of the mask decoder
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    output = reader.text()
    assert process.returncode == 0, output
    report = json.loads((tmp_path / "gpu_cpu-dry-run.json").read_text())
    assert report["status"] == "interrupted by SIGTERM", output
    sections = report["sections"]
    assert sections["build"]["status"] == "ok"
    assert sections["prefill"]["status"] == "ok" and sections["prefill"]["seconds"] < 4.0
    assert report["details"]["prefill"]["shortened"].endswith("of 100000 runs (section deadline)")
    assert report["metrics"]["prefill_ms"] > 0
    assert sections["predictor"]["status"] == "skipped"
    assert sections["predictor"]["reason"].startswith("needs the Python module cv2 (pip install opencv-python-headless)")
    assert sections["decode_compiled"]["status"] == "stopped"
    assert "time limit of 0.5 s" in sections["decode_compiled"]["reason"]
    interrupted = sections["seg_decoder_compiled"]
    assert interrupted["status"] == "interrupted" and interrupted["reason"] == "interrupted by SIGTERM"
    for name in ("gemm_peak", "encoders", "seg_decoder", "decode", "tensorrt"):
        assert (sections[name]["status"], sections[name]["reason"]) == ("skipped", "not selected (--sections / --skip-*)")
    assert list(sections) == list(gpu_all.SECTION_NAMES)  # the whole plan, in order
    assert report["plot"].startswith("skipped: needs the Python module matplotlib") and "--plot-only" in report["plot"]
    assert "status: interrupted by SIGTERM" in output
