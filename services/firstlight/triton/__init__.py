"""NVIDIA Triton: a local server launcher (the tritonserver bundled with nvidia-pytriton) and a client.

`server.LocalTritonServer` runs the repository's deploy/triton/model_repository for tests and the
local stack; `client.TritonModels` is what the services use to call "backbone" and "general".
"""
