"""The LSS wire protocol: message types, encoding, errors and shared defaults.

Broker, workers and clients all import this package and nothing of each other.
The specification is docs/protocol.md.
"""

import logging

from protocol.errors import (
    BrokerUnavailable,
    JobFailed,
    JobTimeout,
    LssError,
    ProtocolError,
    RequestRefused,
    UnknownJob,
)
from protocol.messages import (
    PROTOCOL_ID,
    PROTOCOL_VERSION,
    Command,
    Envelope,
    ErrorCode,
    JobStatus,
    decode,
    encode,
    pack,
    route,
    unpack,
)

# A library stays quiet unless its application configures logging (lss processes do).
logging.getLogger("lss").addHandler(logging.NullHandler())

__all__ = [
    "PROTOCOL_ID",
    "PROTOCOL_VERSION",
    "BrokerUnavailable",
    "Command",
    "Envelope",
    "ErrorCode",
    "JobFailed",
    "JobStatus",
    "JobTimeout",
    "LssError",
    "ProtocolError",
    "RequestRefused",
    "UnknownJob",
    "decode",
    "encode",
    "pack",
    "route",
    "unpack",
]
