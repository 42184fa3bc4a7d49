"""Who is sending: bearer secrets checked without letting a flood of wrong ones take the gateway down.

``lake_core.devices.Authenticator`` decides: a secret's first check costs
one scrypt (~40 ms of CPU), after which it is remembered. An
unauthenticated client could send wrong secrets for real vehicle ids and
make the gateway spend a scrypt on each. ``AuthGuard`` stands in front:

- a secret that passed before (for the device's current record) is checked
  on the event loop: the Authenticator's cached, constant-time compare;
- everything else costs nothing unless it names an active device: a secret
  that is not ours, or names an unknown or revoked vehicle, is refused at
  once;
- a wrong secret is remembered (a bounded negative cache of SHA-256
  fingerprints, forgotten when the device's record changes), so repeating
  it costs nothing;
- a scrypt runs in a worker thread (the loop never blocks), one at a time
  per gateway worker, at most ``slow_checks_per_s`` a second; two requests
  with the same new secret share one check. Past ``max_waiting`` waiting
  checks or the rate, the answer is 503 with ``Retry-After``: the device
  tries again;
- failed slow checks are budgeted per client address and per vehicle id:
  past its budget, a client (or anyone naming that vehicle) gets 429 for
  anything that would need a slow check. A device already verified is not
  affected; unknown vehicle ids and repeated wrong secrets cost nothing and
  are simply refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

from lake.edge.gateway_limits import TokenBuckets
from lake_core.devices import Authenticator, Device, secret_vehicle

__all__ = ["AuthGuard", "AuthLimits", "AuthRefused"]


class AuthRefused(Exception):
    """Why a request is not let in: the HTTP status (401, 429, 503), a detail, and when to retry."""

    def __init__(self, status: int, detail: str, retry_after: Optional[float] = None, reason: str = "unauthorized"):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        self.reason = reason


@dataclass(frozen=True)
class AuthLimits:
    """The flood protection's knobs (defaults sized for one gateway worker on a small machine)."""

    refresh_s: float = 2.0  # re-read the credentials file this often (revocations take effect within it)
    slow_checks_per_s: float = 20.0  # scrypt checks a worker runs at most, a second (about 80% of a core)
    max_waiting: int = 64  # slow checks that may wait for the thread; past it: 503
    failures_per_client_per_s: float = 1.0  # failed checks a client address may cause, sustained
    failures_per_client_burst: float = 30.0
    failures_per_vehicle_per_s: float = 0.2  # failed checks naming one vehicle id, sustained
    failures_per_vehicle_burst: float = 5.0
    negative_cache: int = 100_000  # wrong-secret fingerprints remembered


class AuthGuard:
    def __init__(self, lake_root: str, limits: AuthLimits = AuthLimits()):
        self.limits = limits
        self.authenticator = Authenticator(lake_root, refresh_s=limits.refresh_s)
        # A hint, not a decision: the fingerprint that passed for each vehicle, under which record
        # (its scrypt hash). When it matches, Authenticator.verify is a cache hit and safe on the loop.
        self._passed: dict[str, tuple[bytes, str]] = {}
        self._failed: OrderedDict[bytes, str] = OrderedDict()  # fingerprint -> the record it failed against
        self._checking: dict[bytes, asyncio.Future] = {}
        self._slow = asyncio.Semaphore(1)
        self._slow_budget = TokenBuckets(limits.slow_checks_per_s, max(1.0, limits.slow_checks_per_s))
        self._client_failures = TokenBuckets(limits.failures_per_client_per_s, limits.failures_per_client_burst)
        self._vehicle_failures = TokenBuckets(limits.failures_per_vehicle_per_s, limits.failures_per_vehicle_burst)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-auth")
        self._waiting = 0
        self.slow_checks = 0  # scrypt checks run (for the metrics)
        self._stop = threading.Event()
        self._refresher = threading.Thread(target=self._refresh_loop, name="gateway-credentials", daemon=True)

    def start(self) -> None:
        self.authenticator.refresh(force=True)
        self._refresher.start()

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _refresh_loop(self) -> None:
        # Reading the credentials file (a stat, a GET on object stores) happens here, off the event
        # loop; verify() then finds the devices fresh and does no I/O of its own.
        while not self._stop.wait(self.limits.refresh_s / 2):
            try:
                self.authenticator.refresh(force=False)
            except Exception:  # noqa: BLE001 - a file being rewritten: keep the last good view, retry
                continue

    async def authenticate(self, secret: Optional[str], client: str) -> Device:
        """The active device ``secret`` belongs to; else ``AuthRefused``."""
        if not secret:
            raise AuthRefused(401, "missing bearer secret (Authorization: Bearer <secret>)", reason="missing")
        vehicle_id = secret_vehicle(secret)
        device = None if vehicle_id is None else self.authenticator.device(vehicle_id)
        if vehicle_id is None or device is None or not device.active:
            raise AuthRefused(401, "unknown, revoked or malformed secret")
        fingerprint = hashlib.sha256(secret.encode()).digest()
        if self._passed.get(vehicle_id) == (fingerprint, device.scrypt):
            verified = self.authenticator.verify(secret)  # a cache hit: a constant-time compare of two digests
            if verified is not None:
                return verified
        if self._failed.get(fingerprint) == device.scrypt:
            raise AuthRefused(401, "unknown, revoked or malformed secret")
        return await self._slow_check(secret, fingerprint, device, client)

    async def _slow_check(self, secret: str, fingerprint: bytes, device: Device, client: str) -> Device:
        shared = self._checking.get(fingerprint)
        if shared is not None:  # the same new secret is being checked for another request
            verified = await asyncio.shield(shared)
        else:
            self._admit(client, device.vehicle_id)
            future = asyncio.get_running_loop().create_future()
            self._checking[fingerprint] = future
            try:
                verified = await self._run_check(secret)
                future.set_result(verified)
            except BaseException as exc:
                self._refund(client, device.vehicle_id)
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning when nobody shares it
                raise
            finally:
                del self._checking[fingerprint]
            if verified is not None:
                self._refund(client, device.vehicle_id)  # not a failure after all
                self._passed[device.vehicle_id] = (fingerprint, verified.scrypt)
                self._failed.pop(fingerprint, None)
            else:
                self._remember_failure(fingerprint, device.scrypt)
        if verified is None:
            raise AuthRefused(401, "unknown, revoked or malformed secret")
        return verified

    def _admit(self, client: str, vehicle_id: str) -> None:
        """Let a slow check run, or refuse it before any CPU is spent on it.

        A check is charged to the client's and the vehicle's failure budgets when it starts (and
        refunded when the secret was right), so concurrent wrong secrets cannot outrun the budget."""
        if self._waiting >= self.limits.max_waiting:
            raise AuthRefused(503, "busy checking new secrets; retry shortly", 1.0, reason="auth_busy")
        wait = self._slow_budget.take("all", 1)
        if wait > 0:
            raise AuthRefused(503, "busy checking new secrets; retry shortly", wait, reason="auth_busy")
        wait = self._client_failures.take(client, 1)
        if wait == 0:
            wait = self._vehicle_failures.take(vehicle_id, 1)
            if wait == 0:
                return
            self._client_failures.refund(client, 1)
            what = f"vehicle {vehicle_id}"
        else:
            what = "this client address"
        self._slow_budget.refund("all", 1)
        raise AuthRefused(429, f"too many failed authentications for {what}; retry later", wait, "auth_throttled")

    def _refund(self, client: str, vehicle_id: str) -> None:
        self._client_failures.refund(client, 1)
        self._vehicle_failures.refund(vehicle_id, 1)

    async def _run_check(self, secret: str) -> Optional[Device]:
        self._waiting += 1
        try:
            async with self._slow:
                self.slow_checks += 1
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._pool, self.authenticator.verify, secret)
        finally:
            self._waiting -= 1

    def _remember_failure(self, fingerprint: bytes, record: str) -> None:
        self._failed[fingerprint] = record
        self._failed.move_to_end(fingerprint)
        while len(self._failed) > self.limits.negative_cache:
            self._failed.popitem(last=False)
