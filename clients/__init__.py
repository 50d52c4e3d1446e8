"""The LSS client side: the `Client` library, the `lss` command line, the HTTP gateway."""

from clients.aio import AsyncClient
from clients.client import Client
from clients.transport import Security
from protocol.errors import (
    BrokerUnavailable,
    JobCancelled,
    JobFailed,
    JobTimeout,
    LssError,
    ProtocolError,
    RequestRefused,
    UnknownJob,
)

__all__ = [
    "AsyncClient",
    "BrokerUnavailable",
    "Client",
    "JobCancelled",
    "JobFailed",
    "JobTimeout",
    "LssError",
    "ProtocolError",
    "RequestRefused",
    "Security",
    "UnknownJob",
]
