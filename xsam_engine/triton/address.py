"""The rule for a Triton server address ("host:port"), importable without torch or tritonclient.

`TritonOptions` (the engine) and the ROS node's `triton_url` parameter (start-up validation)
both check it here, so a wrong address is refused before any connection with the same words.
"""

from __future__ import annotations

DEFAULT_PORTS = {"grpc": 8001, "http": 8000}  # tritonserver's defaults


def url_problem(url: str) -> str:
    """Why ``url`` is not a "host:port" address of a Triton server ("" when it is).

    tritonclient takes the address without a scheme (the protocol is a separate choice) and
    with an explicit port; IPv6 hosts are bracketed ("[::1]:8001").
    """
    example = f"e.g. 'gpu-server:{DEFAULT_PORTS['grpc']}' for gRPC, 'gpu-server:{DEFAULT_PORTS['http']}' for HTTP"
    if not isinstance(url, str) or "://" in url or not url.strip() or url != url.strip():
        return (f"triton_url must be 'host:port' without a scheme or spaces ({example}), got {url!r}; "
                "choose the protocol with triton_protocol")
    host, _, port = url.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"triton_url must end in ':port' with a port in 1..65535 ({example}), got {url!r}"
    return ""
