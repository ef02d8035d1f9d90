"""The torch side of gptrl: the policy model, the reference PolicyRunner, bundle writing and ONNX export."""

from gptrl.exporter.onnx_export import ExportVerificationError, export_onnx, verify_export

__all__ = ["ExportVerificationError", "export_onnx", "verify_export"]
