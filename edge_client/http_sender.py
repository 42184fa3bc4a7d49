"""A simulated fleet over HTTP, each vehicle with its own bearer secret (contract section 8).

Messages are gathered per vehicle and sent as NDJSON batches of up to
``batch_size`` to ``POST {url}/v1/telemetry`` on one keep-alive connection.
What the gateway answers decides what happens next, as a real device would
decide:

- 202: delivered (Kafka has it).
- 400: the gateway names the bad lines; they are dropped and counted by
  reason (a device cannot make a malformed message good), the rest resent.
- 413: the batch is split in two and each half sent.
- 429: wait ``Retry-After`` seconds, then send the same batch again (order
  per vehicle is kept: the vehicle's next batch waits behind it).
- 401/403: a configuration error (the secret is wrong or revoked): raised.
- 5xx or no connection: ``UplinkUnavailableError`` (a spool keeps the batch).
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.parse
from typing import Mapping, Optional

from edge_client.device_keys import secret_for
from edge_client.errors import DeliveryError, EdgeConfigError, UplinkUnavailableError

__all__ = ["HttpSender"]

PATH = "/v1/telemetry"


class HttpSender:
    def __init__(
        self,
        url: str,
        keys: Mapping[str, str],
        *,
        batch_size: int = 100,
        timeout_s: float = 30.0,
        tls_ca: Optional[str] = None,
        max_retry_wait_s: float = 300.0,
    ):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise EdgeConfigError(f"gateway URL must be http(s)://host[:port], got {url!r}")
        self.url = url.rstrip("/")
        self._scheme, self._host = parsed.scheme, parsed.hostname
        self._port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self._base = parsed.path.rstrip("/")
        self._tls = ssl.create_default_context(cafile=tls_ca) if parsed.scheme == "https" else None
        self.keys = keys
        self.batch_size = max(1, min(batch_size, 1000))
        self.timeout_s = timeout_s
        self.max_retry_wait_s = max_retry_wait_s
        self.sent = 0  # messages handed to send()
        self.accepted = 0  # messages the gateway answered 202 for
        self.refused: dict[str, int] = {}  # reason code -> messages dropped after a 400
        self.throttled = 0  # 429 answers waited out
        self._pending: dict[str, list[bytes]] = {}
        self._conn: Optional[http.client.HTTPConnection] = None

    # -- the connection

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._tls is not None:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout_s, context=self._tls
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
        return self._conn

    def _post(self, secret: str, body: bytes) -> tuple[int, dict, Mapping[str, str]]:
        headers = {
            "Authorization": f"Bearer {secret}",
            "Content-Type": "application/x-ndjson",
            "Content-Length": str(len(body)),
        }
        for attempt in (1, 2):  # a keep-alive connection the server closed meanwhile: reconnect once
            conn = self._connection()
            try:
                conn.request("POST", self._base + PATH, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._conn = None
                if attempt == 2:
                    raise UplinkUnavailableError(f"gateway at {self.url} unreachable ({exc})") from None
                continue
            try:
                answer = json.loads(payload) if payload else {}
            except ValueError:
                answer = {"detail": payload[:200].decode(errors="replace")}
            return response.status, answer if isinstance(answer, dict) else {}, response.headers
        raise AssertionError("unreachable")

    # -- the Sender protocol

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        vehicle_id = key.decode()
        batch = self._pending.setdefault(vehicle_id, [])
        batch.append(value)
        self.sent += 1
        if len(batch) >= self.batch_size:
            self._deliver(vehicle_id, batch)
            del self._pending[vehicle_id]

    def _deliver(self, vehicle_id: str, lines: list[bytes]) -> None:
        secret = secret_for(self.keys, vehicle_id)
        waited = auth_waited = 0.0
        while lines:
            body = b"\n".join(lines) + b"\n"
            status, answer, headers = self._post(secret, body)
            if status == 202:
                self.accepted += len(lines)
                return
            if status == 400 and isinstance(answer.get("errors"), list):
                bad = {e.get("line") for e in answer["errors"] if isinstance(e, dict)}
                for e in answer["errors"]:
                    reason = str(e.get("reason", "unknown")) if isinstance(e, dict) else "unknown"
                    self.refused[reason] = self.refused.get(reason, 0) + 1
                kept = [line for i, line in enumerate(lines, start=1) if i not in bad]
                if len(kept) == len(lines):  # the gateway named no line we sent: do not loop
                    raise DeliveryError(f"gateway at {self.url} refused a batch of {vehicle_id}: {answer}")
                lines = kept
                continue
            if status == 413 and len(lines) > 1:
                half = len(lines) // 2
                self._deliver(vehicle_id, lines[:half])
                lines = lines[half:]
                continue
            if status == 429:
                wait = _retry_after(headers)
                waited += wait
                if waited > self.max_retry_wait_s:
                    raise UplinkUnavailableError(
                        f"gateway at {self.url} kept throttling {vehicle_id} for {waited:.0f} s"
                    )
                self.throttled += 1
                time.sleep(wait)
                continue
            if status in (401, 403) and auth_waited < AUTH_PROPAGATION_S:
                # A device added a moment ago is known to the gateway within its refresh (2 s; the
                # contract allows 10): wait that long before calling the secret wrong.
                time.sleep(1.0)
                auth_waited += 1.0
                continue
            if status in (401, 403):
                raise EdgeConfigError(
                    f"gateway at {self.url} refused vehicle {vehicle_id} ({status}: {answer.get('detail', answer)}); "
                    "is its secret revoked or wrong?"
                )
            if status >= 500:
                raise UplinkUnavailableError(f"gateway at {self.url} answered {status}: {answer.get('detail', '')}")
            raise DeliveryError(f"gateway at {self.url} answered {status} for {vehicle_id}: {answer}")

    def flush(self, timeout_s: Optional[float] = None) -> None:
        """POST every vehicle's pending lines. Each request is bounded by the connection's own
        timeout; ``timeout_s`` (the spool's confirm budget) is accepted for the Sender protocol."""
        for vehicle_id in list(self._pending):
            self._deliver(vehicle_id, self._pending[vehicle_id])
            del self._pending[vehicle_id]

    def close(self, timeout_s: Optional[float] = None) -> None:
        try:
            self.flush(timeout_s)
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def summary(self) -> str:
        refused = sum(self.refused.values())
        reasons = ", ".join(f"{n:,} {r}" for r, n in sorted(self.refused.items()))
        return f"{self.accepted:,} accepted, {refused:,} refused" + (f" ({reasons})" if reasons else "")


#: How long a refused secret is retried before it counts as wrong: the contract's propagation bound.
AUTH_PROPAGATION_S = 10.0


def _retry_after(headers: Mapping[str, str]) -> float:
    try:
        return min(max(float(headers.get("Retry-After", "1")), 0.05), 60.0)
    except ValueError:
        return 1.0
