"""TFLite flatbuffer reading and writing (the schema's object tree), for patching built models."""

from __future__ import annotations

from edgepose.core.errors import ModelError, RuntimeMissingError


def load_schema():
    """The generated TFLite schema module (from LiteRT, else from TensorFlow)."""
    try:
        from ai_edge_litert import schema_py_generated as schema  # noqa: PLC0415
    except ImportError:
        try:
            from tensorflow.lite.python import schema_py_generated as schema  # noqa: PLC0415
        except ImportError:
            raise RuntimeMissingError("reading TFLite flatbuffers needs ai-edge-litert or tensorflow") from None
    return schema


def read_model(data: bytes):
    """The flatbuffer as the schema's mutable object tree (``ModelT``)."""
    schema = load_schema()
    try:
        if not schema.Model.ModelBufferHasIdentifier(data, 0):
            raise ModelError("not a TFLite flatbuffer (no TFL3 identifier)")
        return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"cannot parse TFLite flatbuffer: {e}") from None


def write_model(model) -> bytes:
    """The object tree packed back into a flatbuffer."""
    import flatbuffers  # noqa: PLC0415 - a dependency of both runtimes

    b = flatbuffers.Builder(1 << 20)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def tensor_name(t) -> str:
    """A tensor's name as text."""
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)
