"""The receiver's networks as ONNX files, for a receiver in the browser (issue 24).

    python -m codec.export --weights codec/weights/cpu.safetensors --out /tmp/kpcall-onnx [--check]

``networks`` holds the exportable forms (reference preparation, per-frame render), ``onnx_export`` writes
them with a manifest, ``verify`` compares onnxruntime's frames with PyTorch's.
"""

from codec.export.onnx_export import ExportedFiles, export_onnx

__all__ = ["ExportedFiles", "export_onnx"]
