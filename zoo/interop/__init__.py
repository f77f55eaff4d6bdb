"""Weights in and models out: PyTorch safetensors import, jax.export and ONNX export."""
