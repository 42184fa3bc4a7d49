"""Device credentials (contract section 8): who may send as which vehicle.

A device proves it is vehicle ``V`` with a secret the lake generated for it
and showed once (``lake devices add V``). The secret carries the vehicle id
(``lk1.<vehicle_id>.<random>``) so that an HTTP bearer token alone names the
device it claims to be; the random part (192 bits) is what proves it.

The lake keeps only salted slow hashes, in ``{LAKE_ROOT}/_devices/credentials.json``
(no table ``lake query`` reads lives under ``_devices``):

- ``scrypt`` (N=2^14, r=8, p=1, 16-byte salt): what the HTTP gateway checks;
- a Mosquitto ``$7$`` hash (PBKDF2-SHA512, 12-byte salt, ``MOSQUITTO_ITERATIONS``):
  what the generated Mosquitto password file holds, since Mosquitto cannot
  check scrypt. Its iteration count is a trade: Mosquitto checks it on every
  CONNECT in its single thread; the secrets are random (not human passwords),
  so the hash guards against a stolen file, not against guessing.

Writes are read-modify-write under the lake's ``devices`` lease, so two
``lake devices`` commands never lose each other's change. Revocation keeps
the device's record (``revoked_at``), so ``list`` shows when it happened and
an edge that reloads the file refuses it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import random
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator, Optional

from pyarrow import fs as pafs

from lake_core.errors import ConfigError, LakeError
from lake_core.lease import Lease, LeaseHeld
from lake_core.storage import filesystem, is_local, write_atomically
from lake_schemas.messages import VEHICLE_ID_PATTERN, is_vehicle_id
from lake_schemas.paths import join

SECRET_PREFIX = "lk1"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MOSQUITTO_ITERATIONS = 10_000
_FORMAT_VERSION = 1


class DeviceError(LakeError):
    """A device operation that cannot be done as asked (unknown device, bad id)."""


@dataclass(frozen=True)
class Device:
    vehicle_id: str
    vehicle_type: str
    added_at_ms: int
    scrypt: str
    mosquitto: str
    revoked_at_ms: Optional[int] = None

    @property
    def active(self) -> bool:
        return self.revoked_at_ms is None


def credentials_path(lake_root: str) -> str:
    return join(lake_root, "_devices", "credentials.json")


# -- secrets and hashes ------------------------------------------------------------------------------


def new_secret(vehicle_id: str) -> str:
    return f"{SECRET_PREFIX}.{vehicle_id}.{secrets.token_urlsafe(24)}"


def secret_vehicle(secret: str) -> Optional[str]:
    """The vehicle id a secret names, or None when it is not one of ours."""
    parts = secret.split(".")
    if len(parts) != 3 or parts[0] != SECRET_PREFIX or not is_vehicle_id(parts[1]):
        return None
    return parts[1]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def scrypt_hash(secret: str, salt: Optional[bytes] = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 * 1024 * 1024, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def scrypt_verify(secret: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(
            secret.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 * 1024 * 1024,
            dklen=len(base64.b64decode(digest)),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def mosquitto_hash(secret: str, salt: Optional[bytes] = None, iterations: int = MOSQUITTO_ITERATIONS) -> str:
    """Mosquitto's ``$7$`` format: PBKDF2-SHA512, ``$7$<iterations>$<salt b64>$<hash b64>``.

    The salt is 12 bytes: Mosquitto 2.0 reads exactly that many (a 16-byte salt never matches)."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    return f"$7${iterations}${_b64(salt)}${_b64(digest)}"


def _hashes(secret: str) -> tuple[str, str]:
    return scrypt_hash(secret), mosquitto_hash(secret)


# -- the store ---------------------------------------------------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


class DeviceStore:
    """``{LAKE_ROOT}/_devices/credentials.json``: read whole, written whole (atomically), under a lease."""

    def __init__(self, lake_root: str):
        self.lake_root = lake_root
        self.path = credentials_path(lake_root)
        self._fs, self._fs_path = filesystem(self.path)
        self._local = is_local(lake_root)

    # reading

    def load(self) -> dict[str, Device]:
        try:
            with self._fs.open_input_stream(self._fs_path) as f:
                raw = f.read()
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(raw)
            return {vid: Device(**rec) for vid, rec in doc["devices"].items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise LakeError(f"{self.path} is not a device credentials file ({exc}); restore it from a backup") from exc

    def version(self) -> Optional[tuple[int, Optional[int]]]:
        """What changes when the file changes (mtime, size): lets an edge skip re-reading it."""
        info = self._fs.get_file_info(self._fs_path)
        if info.type == pafs.FileType.NotFound:
            return None
        mtime = info.mtime_ns if info.mtime_ns is not None else 0
        return mtime, info.size

    # writing

    def _save(self, devices: dict[str, Device]) -> None:
        doc = {"version": _FORMAT_VERSION, "devices": {vid: asdict(d) for vid, d in sorted(devices.items())}}
        folder = self._fs_path.rsplit("/", 1)[0]
        self._fs.create_dir(folder, recursive=True)
        write_atomically(self._fs, self._fs_path, json.dumps(doc, indent=1).encode(), self._local)
        if self._local:
            os.chmod(self._fs_path, 0o600)  # hashes only, but nobody else needs to read them

    @contextlib.contextmanager
    def _locked(self, wait_s: float = 30.0) -> Iterator[None]:
        """Hold the store's lease for one read-modify-write. A second ``lake devices`` waits its
        turn (each holds it for a moment) instead of failing; after ``wait_s`` it names the holder."""
        deadline = time.monotonic() + wait_s
        while True:
            lease = Lease(self.lake_root, "devices", "lake devices", ttl_s=60)
            try:
                lease.acquire()
                break
            except LeaseHeld:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05 + random.random() * 0.1)
        try:
            yield
        finally:
            lease.release()

    def add(self, vehicle_id: str, vehicle_type: str, rotate: bool = False) -> str:
        """Register ``vehicle_id`` and return its new secret (shown once, never stored)."""
        return self.add_many([(vehicle_id, vehicle_type)], rotate=rotate)[vehicle_id]

    def add_many(self, vehicles: Iterable[tuple[str, str]], rotate: bool = False) -> dict[str, str]:
        """Give each vehicle a new secret. An active device keeps its secret unless ``rotate``
        (then its old secret stops working); a revoked one is re-admitted with a new secret."""
        wanted = list(vehicles)
        for vid, vtype in wanted:
            if not is_vehicle_id(vid):
                raise ConfigError(f"{vid!r} is not a vehicle id (contract: {VEHICLE_ID_PATTERN})")
            if not vtype or len(vtype) > 64:
                raise ConfigError(f"vehicle type {vtype!r} must be 1..64 characters")
        fresh = {vid: new_secret(vid) for vid, _ in wanted}
        # Hashing is the slow part: done before taking the lease, so concurrent adds wait for
        # each other only for the read-modify-write. scrypt and PBKDF2 release the GIL: every core.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            hashes = dict(zip(fresh, pool.map(_hashes, fresh.values())))
        with self._locked():
            devices = self.load()
            if not rotate:
                taken = [vid for vid, _ in wanted if vid in devices and devices[vid].active]
                if taken:
                    raise DeviceError(
                        f"{len(taken):,} vehicle(s) already have a secret ({', '.join(taken[:5])}); "
                        "pass --rotate to replace it (the old one stops working)"
                    )
            now = _now_ms()
            for vid, vtype in wanted:
                scrypt, mosq = hashes[vid]
                devices[vid] = Device(vid, vtype, now, scrypt, mosq)
            self._save(devices)
        return fresh

    def revoke(self, vehicle_id: str) -> Device:
        with self._locked():
            devices = self.load()
            if vehicle_id not in devices:
                raise DeviceError(f"no device {vehicle_id!r} in {self.path}")
            device = devices[vehicle_id]
            if device.active:
                device = Device(**{**asdict(device), "revoked_at_ms": _now_ms()})
                devices[vehicle_id] = device
                self._save(devices)
            return device


# -- checking a secret, fast and fresh ----------------------------------------------------------------


class Authenticator:
    """Checks secrets against the store, re-reading it at most every ``refresh_s`` seconds.

    A slow hash per request would cap an edge at a few dozen requests a
    second per core, so a secret that passed scrypt once is remembered (as
    its SHA-256, compared in constant time) until the device's record
    changes: a revocation or rotation takes effect at the next refresh,
    within ``refresh_s`` seconds (the contract allows 10).
    """

    def __init__(self, lake_root: str, refresh_s: float = 2.0):
        self.store = DeviceStore(lake_root)
        self.refresh_s = refresh_s
        self._devices: dict[str, Device] = {}
        self._version: object = object()
        self._checked_at = 0.0
        self._verified: dict[str, tuple[bytes, str]] = {}  # vehicle_id -> (sha256(secret), scrypt hash)
        self._lock = threading.Lock()

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < self.refresh_s:
            return
        with self._lock:
            self._checked_at = now
            version = self.store.version()
            if version == self._version and not force:
                return
            self._devices = self.store.load()
            self._version = version

    def device(self, vehicle_id: str) -> Optional[Device]:
        self.refresh()
        return self._devices.get(vehicle_id)

    def verify(self, secret: str) -> Optional[Device]:
        """The active device ``secret`` belongs to, or None (unknown, revoked, wrong)."""
        vehicle_id = secret_vehicle(secret)
        if vehicle_id is None:
            return None
        device = self.device(vehicle_id)
        if device is None or not device.active:
            return None
        fingerprint = hashlib.sha256(secret.encode()).digest()
        known = self._verified.get(vehicle_id)
        if known is not None and known[1] == device.scrypt:
            return device if hmac.compare_digest(known[0], fingerprint) else None
        if not scrypt_verify(secret, device.scrypt):
            return None
        self._verified[vehicle_id] = (fingerprint, device.scrypt)
        return device
