"""What a handler module declares and receives. Runs in a shard process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rafka_shards.config import BrokerConfig
from rafka_shards.protocol import kio_codec
from rafka_shards.protocol.framing import RequestHeader
from rafka_shards.shard.authz import UNRESTRICTED, Access
from rafka_shards.shard.group_coordinator import GroupCoordinator
from rafka_shards.shard.manager import PartitionManager
from rafka_shards.shard.quotas import ShardQuotas

# A response body without its header: one buffer, or several for writelines() (Fetch passes record data through).
ResponseBody = bytes | list[bytes | memoryview]


@dataclass(frozen=True, slots=True)
class RequestContext:
    header: RequestHeader
    manager: PartitionManager
    config: BrokerConfig
    # Every handler's declaration, by API key (ApiVersions answers from it).
    apis: Mapping[int, ApiHandler] = field(repr=False)
    groups: GroupCoordinator = field(repr=False)
    client_host: str = ""  # the client's address, as group descriptions show it
    listener: str = "PLAINTEXT"  # the listener the request came in on: brokers are described by their address on it
    principal: str = "User:ANONYMOUS"  # who sent it (an SSL listener's client certificate, mapped)
    access: Access = UNRESTRICTED  # what the principal may do (rafka_shards.shard.authz)
    quotas: ShardQuotas | None = field(default=None, repr=False)  # client quotas (Fetch charges its responses)

    @property
    def version(self) -> int:
        return self.header.api_version


# Returns the body, or None when no response is sent (Produce with acks=0).
Handler = Callable[[RequestContext, Any], Awaitable[ResponseBody | None]]


@dataclass(frozen=True, slots=True)
class ApiHandler:
    key: int
    min_version: int
    max_version: int
    handle: Handler = field(repr=False)

    def __post_init__(self) -> None:
        # The advertised range must be one the codec can parse: fail at import, not on a client's request.
        for v in range(self.min_version, self.max_version + 1):
            assert kio_codec.request_class(self.key, v) is not None, (self.key, v)
            assert kio_codec.response_class(self.key, v) is not None, (self.key, v)

    @property
    def name(self) -> str:
        name = kio_codec.api_name(self.key)
        assert name is not None
        return name

    def supports(self, version: int) -> bool:
        return self.min_version <= version <= self.max_version


class CloseConnection(Exception):
    """The handler asks the connection to close after the responses before this one (Kafka's answer to errors in
    an acks=0 produce, which has no response to carry them)."""


def timeout_ms(value: Any, upper_bound_ms: int) -> int:
    """A kio timedelta field as whole milliseconds, clamped to [0, upper_bound_ms]."""
    ms = int(value.total_seconds() * 1000)
    return max(0, min(ms, upper_bound_ms))
