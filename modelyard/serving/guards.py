"""What stands between a client and the model: API keys, an IP allow-list, throttling, shedding.

Checked in this order, before a request's body is read:

1. the allow-list (CIDRs): a client outside it gets 403, whatever else it sends;
2. API keys (`Authorization: Bearer KEY` or `X-Api-Key: KEY`): a missing or unknown key gets 401.
   Only the keys' sha256 digests are kept, compared in constant time; a key never appears in a
   log, an error or `/health`. `/ping` needs no key (load balancers probe it);
3. throttling (of invocations): a token bucket per client (its key, else its address) refills
   at `rate` requests per second up to `burst`; an empty bucket gets 429 with `Retry-After`
   (whole seconds, as HTTP wants) saying when a token will be there;
4. shedding (of invocations): with `max_in_flight` requests already being served, another one
   gets 503 at once (with `Retry-After: 1`) instead of queueing until everyone times out.

A request that waited longer than `timeout` for its prediction gets 504 (the prediction itself is
not interrupted: a model call cannot be, and it is shorter than any sensible timeout).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from modelyard.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
INVOCATIONS = "/invocations"


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class GuardOptions:
    key_digests: tuple[str, ...] = ()  # sha256 hex of the accepted API keys; empty: no keys
    allow: tuple[Network, ...] = ()  # empty: every client
    rate: float | None = None  # requests per second per client; None: no throttling
    burst: int = 1  # how many requests a client may send at once after being idle
    max_in_flight: int | None = None  # None: no shedding
    timeout: float | None = None  # seconds a request may wait for its prediction

    @classmethod
    def build(
        cls,
        *,
        keys: Iterable[str] = (),
        allow: Iterable[str] = (),
        rate: float | None = None,
        burst: int | None = None,
        max_in_flight: int | None = None,
        timeout: float | None = None,
    ) -> GuardOptions:
        """Validated options from what a user typed (errors name the bad value)."""
        digests = []
        for key in keys:
            key = key.strip()
            if len(key) < 16:
                raise ConfigError(
                    "an API key is shorter than 16 characters",
                    hint="use long random keys, e.g. `python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))'`",
                )
            digests.append(key_digest(key))
        networks = []
        for text in allow:
            try:
                networks.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                raise ConfigError(
                    f"'{text}' is not an IP network",
                    hint="write CIDRs such as 127.0.0.1/32, 10.0.0.0/8 or ::1/128",
                ) from None
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"the rate must be a positive number of requests/s, not {rate}")
        if burst is not None and burst < 1:
            raise ConfigError(f"the burst must be 1 or more, not {burst}")
        if max_in_flight is not None and max_in_flight < 1:
            raise ConfigError(f"max in flight must be 1 or more, not {max_in_flight}")
        if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
            raise ConfigError(f"the timeout must be a positive number of seconds, not {timeout}")
        default_burst = max(1, math.ceil(rate)) if rate is not None else 1
        return cls(
            key_digests=tuple(digests),
            allow=tuple(networks),
            rate=rate,
            burst=burst if burst is not None else default_burst,
            max_in_flight=max_in_flight,
            timeout=timeout,
        )


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str
    retry_after: int | None = None


@dataclass
class TokenBucket:
    """`rate` tokens per second, at most `burst`; a request takes one."""

    rate: float
    burst: int
    tokens: float = field(init=False)
    updated: float = field(init=False)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)
        self.updated = self.clock()

    def take(self) -> float:
        """0 if a token was taken, else the seconds until one will be there."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Guards:
    MAX_BUCKETS = 10_000  # clients remembered; the idle ones (full buckets) are forgotten first

    def __init__(self, options: GuardOptions, clock: Callable[[], float] = time.monotonic):
        self.options = options
        self.clock = clock
        self.in_flight = 0
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def active(self) -> bool:
        o = self.options
        return bool(o.key_digests or o.allow or o.rate or o.max_in_flight)

    def check(
        self, client: str | None, path: str, headers: Sequence[tuple[bytes, bytes]]
    ) -> Refusal | None:
        """Why this request is refused, or None."""
        o = self.options
        if o.allow and not _allowed(client, o.allow):
            return Refusal(403, "FORBIDDEN", "this address may not call the model server")
        identity = client or "unknown"
        if o.key_digests and path != "/ping":
            key = _key(headers)
            if key is None:
                return Refusal(
                    401,
                    "UNAUTHENTICATED",
                    "an API key is required: send `Authorization: Bearer KEY` or `X-Api-Key`",
                )
            digest = key_digest(key)
            if not any(hmac.compare_digest(digest, known) for known in o.key_digests):
                return Refusal(401, "UNAUTHENTICATED", "the API key is not valid")
            identity = "key:" + digest
        if path != INVOCATIONS:  # probes and scrapes cost no tokens and are never shed
            return None
        if o.rate is not None:
            wait = self._bucket(identity).take()
            if wait > 0:
                return Refusal(
                    429,
                    "REQUEST_LIMIT_EXCEEDED",
                    f"too many requests: at most {o.rate:g}/s (burst {o.burst})",
                    retry_after=max(1, math.ceil(wait)),
                )
        if o.max_in_flight is not None and self.in_flight >= o.max_in_flight:
            return Refusal(
                503, "OVERLOADED", "the server is at capacity: retry shortly", retry_after=1
            )
        return None

    def _bucket(self, identity: str) -> TokenBucket:
        bucket = self._buckets.get(identity)
        if bucket is None:
            if len(self._buckets) >= self.MAX_BUCKETS:
                self._forget_idle()
            assert self.options.rate is not None
            bucket = TokenBucket(self.options.rate, self.options.burst, clock=self.clock)
            self._buckets[identity] = bucket
        return bucket

    def _forget_idle(self) -> None:
        now = self.clock()
        rate, burst = self.options.rate or 1.0, self.options.burst
        idle = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * rate >= burst]
        for key in idle or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[key]


def _allowed(client: str | None, networks: Sequence[Network]) -> bool:
    if client is None:
        return False
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _key(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            return bytes(value).decode("latin-1").strip()
    return None
