"""NVIDIA Triton Inference Server support: the model repository writer and a local server for tests.

* `repository.write_triton_repository(model, DIR, RepositoryOptions(...))` (also
  `python -m xsam_engine.export --triton-repository DIR`): one Triton model per exported graph.
* `python_model.py`: the Python-backend model (ONNX Runtime) of the "python" platform.
* `local_server.LocalTritonServer`: the `tritonserver` of the nvidia-pytriton wheel on 127.0.0.1
  (tests and benchmarks on machines without NVIDIA's container).

The client side is `xsam_engine.backends.triton_stages.TritonStages` (`backend="triton"`).
"""
