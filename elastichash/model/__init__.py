"""Encoder models: the ONNX contract, onnxruntime sessions, preprocessing, the default model.

Import the submodules directly (``elastichash.model.encoder``...); this package imports nothing
heavy so that ``elastichash --help`` stays fast.
"""
