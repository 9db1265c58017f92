"""Where an ONNX graph says its weights live: the `external_data` locations of every tensor,
read straight from the protobuf wire format of the model bytes.

Why by hand: the torch-free runtime has onnxruntime but not the `onnx` package, and
onnxruntime offers no API to list a model's external files before it opens them. A bundle
is untrusted, so before a session is created every location must be a relative path listed
(and hashed) in the manifest; the files are then handed to onnxruntime from memory, so it
never reads a path of the graph's choosing (e.g. /etc/passwd, which onnxruntime 1.18 read).

The walk follows only the messages that can hold tensors: ModelProto.graph (7) and
.functions (25); GraphProto.node (1), .initializer (5), .sparse_initializer (15);
NodeProto.attribute (5); AttributeProto.t (5), .g (6), .tensors (10), .graphs (11),
.sparse_tensor (22), .sparse_tensors (23); SparseTensorProto.values (1), .indices (2);
FunctionProto.node (7); TensorProto.external_data (13: key 1 / value 2) and
.data_location (14). Field numbers from onnx/onnx.proto.
"""

from __future__ import annotations

from typing import Iterator, List, Set, Tuple

from ...errors import BundleError

_MAX_DEPTH = 64  # nested subgraphs; deeper is not a graph this product wrote


def _varint(buf: memoryview, i: int) -> Tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: memoryview) -> Iterator[Tuple[int, int, object]]:
    """(field number, wire type, value): ints for varints, memoryviews for bytes."""
    i, n = 0, len(buf)
    while i < n:
        tag, i = _varint(buf, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            v, i = _varint(buf, i)
            yield field, wire, v
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length, i = _varint(buf, i)
            if i + length > n:
                raise ValueError("truncated field")
            yield field, wire, buf[i:i + length]
            i += length
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if i > n:
            raise ValueError("truncated field")


def _tensor(buf: memoryview, out: Set[str]) -> None:
    external, location = False, None
    for f, w, v in _fields(buf):
        if f == 14 and w == 0:
            external = v == 1
        elif f == 13 and w == 2:
            key = value = None
            for f2, w2, v2 in _fields(v):
                if f2 == 1 and w2 == 2:
                    key = bytes(v2).decode("utf-8", "replace")
                elif f2 == 2 and w2 == 2:
                    value = bytes(v2).decode("utf-8", "replace")
            if key == "location":
                location = value
    if external or location is not None:
        if not location:
            raise ValueError("an external tensor names no location")
        out.add(location)


def _sparse(buf: memoryview, out: Set[str]) -> None:
    for f, w, v in _fields(buf):
        if f in (1, 2) and w == 2:
            _tensor(v, out)


def _graph(buf: memoryview, out: Set[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError("subgraphs nested too deeply")
    for f, w, v in _fields(buf):
        if w != 2:
            continue
        if f == 1:
            _node(v, out, depth)
        elif f == 5:
            _tensor(v, out)
        elif f == 15:
            _sparse(v, out)


def _node(buf: memoryview, out: Set[str], depth: int) -> None:
    for f, w, v in _fields(buf):
        if f == 5 and w == 2:
            for f2, w2, v2 in _fields(v):
                if w2 != 2:
                    continue
                if f2 in (5, 10):
                    _tensor(v2, out)
                elif f2 in (6, 11):
                    _graph(v2, out, depth + 1)
                elif f2 in (22, 23):
                    _sparse(v2, out)


def external_locations(model: bytes) -> List[str]:
    """Every external-data location named in an ONNX model, sorted; BundleError when the
    bytes are not a well-formed model."""
    out: Set[str] = set()
    try:
        for f, w, v in _fields(memoryview(model)):
            if f == 7 and w == 2:
                _graph(v, out, 0)
            elif f == 25 and w == 2:  # FunctionProto: its nodes may carry tensor attributes
                for f2, w2, v2 in _fields(v):
                    if f2 == 7 and w2 == 2:
                        _node(v2, out, 1)
    except ValueError as e:
        raise BundleError(f"the ONNX graph is malformed ({e}); re-export the bundle") from None
    return sorted(out)
