"""The errors of the `triton` backend, importable without torch or tritonclient (the ROS node's pipeline reads them).

* `TritonServerError`: the server cannot serve this model's image stages: a model is missing or
  not ready, it serves other weights, or it rejected a request. The message names the server
  ("grpc://host:port") and the fix.
* `TritonUnavailableError` (a `TritonServerError`): the server could not be reached (connection
  refused or reset, or no answer within the per-request timeout). It is transient: the next call
  tries again, so a caller keeps running and recovers when the server is back.

Both are RuntimeErrors (`xsam_engine.backends.triton_stages` raises them).
"""

from __future__ import annotations


class TritonServerError(RuntimeError):
    """The Triton server cannot serve this model's image stages (the message names the server and the fix)."""


class TritonUnavailableError(TritonServerError):
    """The Triton server could not be reached (connection refused, reset, or timed out)."""
