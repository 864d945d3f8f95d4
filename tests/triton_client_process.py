"""A second robot: track the tiny model's referring condition over generated frames through a Triton server.

    python tests/triton_client_process.py URL FRAMES OUT.json

Writes {"frames": [[mask bytes hash, ...] per frame], "seconds": ...} (used by tests/test_triton.py
to show that two client processes share one server and both get the local backend's masks).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from engine_fixtures import TASK_REQUESTS, scene_image, tiny_model_and_tokenizer  # noqa: E402

from xsam_engine.backends import create_predictor  # noqa: E402
from xsam_engine.requests import Task  # noqa: E402


def mask_digests(result) -> list[str]:
    return [hashlib.sha256(instance.mask.tobytes()).hexdigest()[:16] for instance in result.instances]


def track(predictor, frames: int) -> list[list[str]]:
    predictor.set_image(scene_image(1))
    condition = predictor.segment(TASK_REQUESTS[Task.INSTANCE]).condition
    digests = []
    for index in range(frames):
        predictor.set_image(scene_image(2 + index))
        digests.append(mask_digests(predictor.decode(condition)))
    return digests


def main() -> int:
    url, frames, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    model, tokenizer = tiny_model_and_tokenizer()
    predictor, _ = create_predictor(backend="triton", device="cpu", model=model, tokenizer=tokenizer, triton_url=url,
                                    triton_timeout_s=20.0, log=False)
    start = time.perf_counter()
    digests = track(predictor, frames)
    out.write_text(json.dumps({"frames": digests, "seconds": time.perf_counter() - start}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
