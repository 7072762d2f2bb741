"""Deterministic fault injection for the source API.

Each request is identified by its path and query string. The n-th time the server sees the same
request, whether it fails (and how) is a pure function of ``(seed, request, n)``: the same
sequence of requests gets the same failures in every run. At most ``max_consecutive`` attempts
of one request fail in a row, so a client that retries at least that many times always gets
through - the faults test the client's retry policy, they are not an outage.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

KINDS = ("500", "503", "429", "drop", "slow")


@dataclass
class FaultPlan:
    rate: float = 0.0
    seed: int = 0
    max_consecutive: int = 3
    slow_seconds: float = 0.5
    retry_after_seconds: int = 1
    _attempts: dict[str, int] = field(default_factory=dict, repr=False)
    _streak: dict[str, int] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, got {self.rate}")

    def decide(self, request_key: str) -> str | None:
        """The fault for this attempt of ``request_key`` (one of KINDS), or None."""
        if self.rate <= 0:
            return None
        with self._lock:
            attempt = self._attempts.get(request_key, 0)
            self._attempts[request_key] = attempt + 1
            digest = hashlib.blake2b(
                f"{self.seed}|{request_key}|{attempt}".encode(), digest_size=8
            ).digest()
            draw = int.from_bytes(digest[:4], "big") / 2**32
            if draw >= self.rate or self._streak.get(request_key, 0) >= self.max_consecutive:
                self._streak[request_key] = 0
                return None
            self._streak[request_key] = self._streak.get(request_key, 0) + 1
            return KINDS[int.from_bytes(digest[4:], "big") % len(KINDS)]
