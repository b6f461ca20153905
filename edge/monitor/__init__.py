"""The Pi runtime: onnxruntime inference, batch, stream, the live monitor, the bundle benchmark."""
