"""Payloads: how values cross the store (conversion to JSON, a codec, a size limit) and come back typed."""

from perdure._payloads._codec import (
    ENCODED_KEY,
    PayloadCodec,
    UnreadablePayloadError,
    encoded_size,
    is_encoded,
)
from perdure._payloads._convert import DataConverter, iso_duration, type_label
from perdure._payloads._payloads import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Payloads,
    PayloadTypes,
    parameter_type,
    return_type,
)

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "ENCODED_KEY",
    "DataConverter",
    "PayloadCodec",
    "PayloadTypes",
    "Payloads",
    "UnreadablePayloadError",
    "encoded_size",
    "is_encoded",
    "iso_duration",
    "parameter_type",
    "return_type",
    "type_label",
]
