"""One writer per lake and topic: the ingest's lease.

Two ``lake ingest`` on one lake would delete each other's half-written
groups (``BronzeStore.recover``) and lose offsets, so an ingest holds a
lease for as long as it runs, and a second one exits 3 naming the holder
(pid, host, since).

The lease is a JSON record ``{LAKE_ROOT}/_leases/ingest-<topic>.json``:
owner (a random id per run), host, pid, since, and an expiry the holder
pushes forward at every pass (``renew``). A lease whose expiry has passed
(its holder was killed, or lost its machine) is taken over.

- Locally the record sits beside a lock file held with ``flock`` for the
  holder's lifetime: the kernel releases it when the holder dies, however it
  dies, so a killed ingest's lease is free at once (its record stays, for
  the next holder to name in its log).
- On object stores (``s3://``, ``gs://``) the record itself is the lock:
  created with a conditional PUT (``If-None-Match: *`` on S3, generation 0
  on GCS) and taken over or renewed only with a PUT conditioned on the
  version read (``If-Match`` ETag, generation match), so of two ingests
  racing for it exactly one wins.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Optional

from lake_core.errors import LakeError
from lake_core.storage import is_local
from lake_schemas.paths import join

__all__ = ["LeaseHeld", "LeaseLost", "LeaseRecord", "Lease", "DEFAULT_TTL_S", "lease_path"]

LOG = logging.getLogger(__name__)

#: How long a lease outlives its last renewal; ``renewing()`` renews it every third of that.
DEFAULT_TTL_S = 120.0


class LeaseHeld(LakeError):
    """Another ingest holds the lease."""

    exit_code = 3


class LeaseLost(LakeError):
    """Our lease expired and another ingest took it: stop writing."""

    exit_code = 3


@dataclass(frozen=True)
class LeaseRecord:
    owner: str
    host: str
    pid: int
    since: str  # ISO 8601, UTC
    expires_at: float  # epoch seconds
    what: str  # e.g. "ingest vehicle-telemetry"

    def describe(self) -> str:
        left = self.expires_at - time.time()
        return f"pid {self.pid} on {self.host}, since {self.since} (lease expires in {max(left, 0):.0f} s)"

    @staticmethod
    def parse(data: bytes) -> Optional[LeaseRecord]:
        try:
            return LeaseRecord(**json.loads(data))
        except (ValueError, TypeError):
            return None  # torn or foreign: treated as expired


def lease_path(lake_root: str, name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return join(lake_root, "_leases", f"{safe}.json")


class Lease:
    """``with Lease(root, "ingest-<topic>", "ingest <topic>"):`` holds it; ``renew()`` at every pass."""

    def __init__(
        self, lake_root: str, name: str, what: str, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.time
    ):
        self.lake_root = lake_root
        self.path = lease_path(lake_root, name)
        self.what = what
        self.ttl_s = ttl_s
        self._clock = clock
        self.record = LeaseRecord(
            owner=uuid.uuid4().hex,
            host=socket.gethostname(),
            pid=os.getpid(),
            since=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            expires_at=0.0,
            what=what,
        )
        self.previous: Optional[LeaseRecord] = None  # the holder we took over from, if its record was left
        self._store: _LeaseStore = _LocalStore(self.path) if is_local(lake_root) else _remote_store(self.path)

    def acquire(self) -> Lease:
        self.previous = self._store.acquire(self._fresh(), self._clock())
        return self

    def renew(self) -> None:
        """Push the expiry forward; ``LeaseLost`` when another ingest has taken the lease meanwhile."""
        self._store.renew(self._fresh())

    def release(self) -> None:
        self._store.release(self.record.owner)

    @contextlib.contextmanager
    def renewing(self, on_lost: Callable[[LeaseLost], None]) -> Iterator[None]:
        """Renew from a thread every third of the TTL while the block runs (a pass may outlast the TTL);
        ``on_lost`` is called (from that thread) if the lease was taken over, and renewing stops."""
        done = threading.Event()

        def keep() -> None:
            while not done.wait(self.ttl_s / 3):
                try:
                    self.renew()
                except LeaseLost as exc:
                    on_lost(exc)
                    return
                except Exception as exc:  # noqa: BLE001 - a flaky store: the next round tries again
                    LOG.warning("renewing the lease %s failed (%s); retrying", self.path, exc)

        thread = threading.Thread(target=keep, name="lease-renewal", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _fresh(self) -> LeaseRecord:
        self.record = LeaseRecord(**{**asdict(self.record), "expires_at": self._clock() + self.ttl_s})
        return self.record

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class _LeaseStore:
    def acquire(self, record: LeaseRecord, now: float) -> Optional[LeaseRecord]:
        raise NotImplementedError

    def renew(self, record: LeaseRecord) -> None:
        raise NotImplementedError

    def release(self, owner: str) -> None:
        raise NotImplementedError


def _held(holder: LeaseRecord) -> LeaseHeld:
    return LeaseHeld(
        f"another {holder.what} writes this lake: {holder.describe()}; stop it first "
        "(a killed one's lease is taken over once it expires)"
    )


class _LocalStore(_LeaseStore):
    """``flock`` on ``<record>.lock`` for the holder's lifetime; the record says who."""

    def __init__(self, path: str):
        self.record_path = Path(path)
        self.lock_path = Path(f"{path}.lock")
        self._lock: Optional[IO[bytes]] = None

    def acquire(self, record: LeaseRecord, now: float) -> Optional[LeaseRecord]:
        self.record_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_path, "a+b")  # noqa: SIM115 - held open for the lease's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            holder = self._read()
            raise _held(holder) if holder else LeaseHeld(f"another ingest holds {self.lock_path}") from None
        self._lock = handle
        previous = self._read()
        self._write(record)
        return previous

    def renew(self, record: LeaseRecord) -> None:
        if self._lock is None:
            raise LeaseLost("the lease was released")
        self._write(record)  # the flock is ours until we die: nobody can have taken it

    def release(self, owner: str) -> None:
        if self._lock is None:
            return
        current = self._read()
        if current is not None and current.owner == owner:
            self.record_path.unlink(missing_ok=True)
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()
        self._lock = None

    def _read(self) -> Optional[LeaseRecord]:
        try:
            return LeaseRecord.parse(self.record_path.read_bytes())
        except OSError:
            return None

    def _write(self, record: LeaseRecord) -> None:
        tmp = self.record_path.with_name(f".{self.record_path.name}.{record.owner}.inprogress")
        tmp.write_text(json.dumps(asdict(record)))
        os.replace(tmp, self.record_path)


class _ConditionalStore(_LeaseStore):
    """A record on an object store, replaced only by a PUT conditioned on the version read."""

    def __init__(self, path: str):
        self.path = path
        self._version: Optional[str] = None

    # Each backend: read -> (record bytes, version) or None; put(data, if_version) -> new version or None
    # when the condition failed (if_version None: create only); delete(if_version).
    def _get(self) -> Optional[tuple[bytes, str]]:
        raise NotImplementedError

    def _put(self, data: bytes, if_version: Optional[str]) -> Optional[str]:
        raise NotImplementedError

    def _delete(self, if_version: str) -> None:
        raise NotImplementedError

    def acquire(self, record: LeaseRecord, now: float) -> Optional[LeaseRecord]:
        data = json.dumps(asdict(record)).encode()
        current = self._get()
        previous = None
        if current is None:
            version = self._put(data, None)
        else:
            previous = LeaseRecord.parse(current[0])
            if previous is not None and previous.expires_at > now:
                raise _held(previous)
            version = self._put(data, current[1])  # take over an expired (or unreadable) lease
        if version is None:  # another ingest won the race
            winner = self._get()
            holder = LeaseRecord.parse(winner[0]) if winner else None
            raise _held(holder) if holder else LeaseHeld(f"another ingest took the lease {self.path} just now")
        self._version = version
        return previous

    def renew(self, record: LeaseRecord) -> None:
        version = self._put(json.dumps(asdict(record)).encode(), self._version)
        if version is None:
            current = self._get()
            holder = LeaseRecord.parse(current[0]) if current else None
            raise LeaseLost(
                "the ingest lease expired and was taken over"
                + (f" by {holder.describe()}" if holder else "")
                + ": this ingest stops (its pass in flight was not committed)"
            )
        self._version = version

    def release(self, owner: str) -> None:
        if self._version is not None:
            self._delete(self._version)
            self._version = None


class _S3Store(_ConditionalStore):
    def __init__(self, path: str):
        super().__init__(path)
        import boto3

        bucket_key = path.split("://", 1)[1]
        self.bucket, self.key = bucket_key.split("/", 1)
        endpoint = os.environ.get("AWS_ENDPOINT_URL")  # read by the AWS SDKs; not ours to list
        self.client: Any = boto3.client("s3", endpoint_url=endpoint) if endpoint else boto3.client("s3")

    def _get(self) -> Optional[tuple[bytes, str]]:
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.NoSuchKey:
            return None
        return got["Body"].read(), got["ETag"]

    def _put(self, data: bytes, if_version: Optional[str]) -> Optional[str]:
        from botocore.exceptions import ClientError

        condition = {"IfNoneMatch": "*"} if if_version is None else {"IfMatch": if_version}
        try:
            put = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data, **condition)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return None
            raise
        return str(put["ETag"])

    def _delete(self, if_version: str) -> None:
        current = self._get()
        if current is not None and current[1] == if_version:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)


class _GcsStore(_ConditionalStore):
    def __init__(self, path: str):
        super().__init__(path)
        import google.cloud.storage as gcs

        bucket_key = path.split("://", 1)[1]
        bucket, key = bucket_key.split("/", 1)
        self.blob: Any = gcs.Client().bucket(bucket).blob(key)

    def _get(self) -> Optional[tuple[bytes, str]]:
        from google.api_core.exceptions import NotFound

        try:
            data = self.blob.download_as_bytes()
        except NotFound:
            return None
        return data, str(self.blob.generation)

    def _put(self, data: bytes, if_version: Optional[str]) -> Optional[str]:
        from google.api_core.exceptions import PreconditionFailed

        try:
            self.blob.upload_from_string(data, if_generation_match=int(if_version) if if_version else 0)
        except PreconditionFailed:
            return None
        return str(self.blob.generation)

    def _delete(self, if_version: str) -> None:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        try:
            self.blob.delete(if_generation_match=int(if_version))
        except (NotFound, PreconditionFailed):
            pass


def _remote_store(path: str) -> _LeaseStore:
    scheme = path.split("://", 1)[0]
    if scheme == "s3":
        return _S3Store(path)
    if scheme in ("gs", "gcs"):
        return _GcsStore(path)
    raise LakeError(f"no lease for a lake on {scheme}://: one writer cannot be guaranteed there")
