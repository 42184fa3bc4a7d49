"""The project's Mosquitto (contract section 8): Debian's broker, configured from the device store.

``start`` writes, under ``{LAKE_ROOT}/_local/mqtt/``, a configuration that
admits only the devices of ``lake_core.devices`` (username = vehicle id,
password = its secret, checked against the store's ``$7$`` hash) and the
bridge's own account, with an ACL that lets a device write only to
``telemetry/<its vehicle id>`` and read nothing, and the bridge read
``telemetry/#``. It listens on its own port (default 1884): the machine's
own Mosquitto on 1883 is never touched.

``reload_if_running`` (called after ``lake devices add|revoke``) rewrites the
password and ACL files and sends SIGHUP: Mosquitto re-reads both at once, so
a revoked device cannot connect again, and a connected one is disconnected
(measured with Mosquitto 2.0.11: on reload it re-checks every connected
client against the new password file).

Privileges. Started as root, Mosquitto switches to the ``mosquitto`` user
before it reads the password and ACL files, opens its log or writes its
persistence file. Rather than ``user root`` (a network-facing parser running
as root), the generated folder and files are handed to that user, mode
0700/0600; its parent folders must let that user through (``o+x``), which
``start`` checks and names when they do not.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import ipaddress
import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from lake_core.devices import DeviceStore, mosquitto_hash
from lake_core.errors import BrokerStartError, ConfigError, LakeError
from lake_core.processes import port_free, proc_stat, reap, same_process
from lake_core.settings import Settings, env

__all__ = [
    "MOSQUITTO",
    "DEFAULT_PORT",
    "BRIDGE_USER",
    "MosquittoInfo",
    "state_dir",
    "bridge_secret",
    "start_mosquitto",
    "stop_mosquitto",
    "running_mosquitto",
    "reload_if_running",
    "write_auth_files",
    "run_foreground",
]

MOSQUITTO = "/usr/sbin/mosquitto"
DEFAULT_PORT = 1884
#: Not a vehicle id (a dot is outside ``VEHICLE_ID_PATTERN``): no device can ever take the bridge's name.
BRIDGE_USER = "lake.bridge"
TELEMETRY_PREFIX = "telemetry/"
STARTUP_TIMEOUT_S = 10.0
#: Messages Mosquitto holds for one client beyond those in flight (the bridge while it is down):
#: past this it drops QoS 1 messages, so it is large; memory is the bound (about 100 MB per 300K messages).
MAX_QUEUED_MESSAGES = 1_000_000
#: Unacknowledged QoS 1 messages in flight to one MQTT 3 client (an MQTT 5 client says its own, the
#: bridge 65,535). Mosquitto's default of 20 would cap a bridge that acknowledges only after Kafka did.
MAX_INFLIGHT_MESSAGES = 10_000
#: Larger MQTT packets are refused at the door: Kafka takes messages up to about 1 MB, and one it
#: refused would stay unacknowledged for ever. Bronze refuses anything over 16 KiB anyway (too_large).
MAX_PACKET_BYTES = 512 * 1024
_RUN_AS = "mosquitto"  # the user Debian's Mosquitto drops to when started as root


@dataclass(frozen=True)
class MosquittoInfo:
    pid: int
    start: int  # the process's start time: pid + start name it for good
    host: str
    port: int
    config: str
    log: str
    tls_port: Optional[int] = None
    ca: Optional[str] = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def is_running(self) -> bool:
        """The recorded process runs, is the one recorded, and is Mosquitto with our configuration."""
        if not same_process(self.pid, self.start):
            return False
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return bool(cmdline) and cmdline[0].endswith(b"mosquitto") and self.config.encode() in cmdline


# -- where things are ------------------------------------------------------------------------------


def state_dir(settings: Settings) -> Path:
    """``{LAKE_ROOT}/_local/mqtt`` for a local lake; the user's state folder for a lake on S3/GCS."""
    if not settings.is_local:
        return Path.home() / ".local" / "state" / "lake" / "mqtt"
    return Path(settings.paths.local_state) / "mqtt"


def _state_file(settings: Settings) -> Path:
    return state_dir(settings) / "mosquitto.json"


def running_mosquitto(settings: Settings) -> Optional[MosquittoInfo]:
    """The Mosquitto this lake root started, if it still runs."""
    try:
        info = MosquittoInfo(**json.loads(_state_file(settings).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return info if info.is_running() else None


# -- files Mosquitto reads -------------------------------------------------------------------------


def _run_as() -> Optional[pwd.struct_passwd]:
    """The account Mosquitto will run as when we are root; None when we are not (it keeps our uid)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(_RUN_AS)
    except KeyError:
        raise ConfigError(
            f"run as root, Mosquitto switches to the user {_RUN_AS!r}, which does not exist: "
            "install Debian's mosquitto package (it creates it) or run `lake mqtt start` as another user"
        ) from None


def _hand_over(path: Path) -> None:
    """Make ``path`` Mosquitto's when it will run as another user than ours."""
    account = _run_as()
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)


def _write_private(path: Path, text: str, for_mosquitto: bool = True) -> None:
    """Write ``text`` to ``path`` whole (a reader never sees half a file), mode 0600, Mosquitto's
    unless ``for_mosquitto`` is False (the CA's key: Mosquitto never reads it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if for_mosquitto:
            _hand_over(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _prepare_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    _hand_over(folder)
    account = _run_as()
    if account is None:
        return
    for parent in folder.parents:  # the mosquitto user must be let through every folder above
        mode = parent.stat()
        others_pass = mode.st_mode & 0o001
        group_pass = mode.st_mode & 0o010 and mode.st_gid == account.pw_gid
        owner_pass = mode.st_mode & 0o100 and mode.st_uid == account.pw_uid
        if not (others_pass or group_pass or owner_pass):
            raise ConfigError(
                f"Mosquitto runs as the user {_RUN_AS!r} (started as root), which cannot enter {parent} "
                f"(mode {mode.st_mode & 0o777:o}): `chmod o+x {parent}` or choose another --lake-root"
            )


def bridge_secret(settings: Settings, create: bool = False) -> str:
    """The bridge's MQTT password: env ``LAKE_MQTT_BRIDGE_SECRET`` when set (Mosquitto and the bridge
    in different containers share it that way), else generated once into ``bridge.secret`` (mode 0600)."""
    shared = env("LAKE_MQTT_BRIDGE_SECRET")
    if shared:
        if len(shared) < 16:
            raise ConfigError("LAKE_MQTT_BRIDGE_SECRET must be at least 16 characters")
        return shared
    path = state_dir(settings) / "bridge.secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if not create:
            raise ConfigError(f"no bridge secret at {path}: run `lake mqtt start` first") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def write_auth_files(settings: Settings) -> int:
    """(Re)write ``passwd`` and ``acl`` from the device store; returns the number of active devices."""
    folder = state_dir(settings)
    _prepare_folder(folder)
    devices = [d for d in DeviceStore(settings.lake_root).load().values() if d.active]
    devices.sort(key=lambda d: d.vehicle_id)
    bridge_hash = _bridge_hash(folder, bridge_secret(settings, create=True))
    passwd = [f"{BRIDGE_USER}:{bridge_hash}"] + [f"{d.vehicle_id}:{d.mosquitto}" for d in devices]
    acl = [f"user {BRIDGE_USER}", f"topic read {TELEMETRY_PREFIX}#", ""]
    for d in devices:  # write only its own topic; no read line: a device reads nothing
        acl += [f"user {d.vehicle_id}", f"topic write {TELEMETRY_PREFIX}{d.vehicle_id}", ""]
    _write_private(folder / "passwd", "\n".join(passwd) + "\n")
    _write_private(folder / "acl", "\n".join(acl))
    return len(devices)


def _bridge_hash(folder: Path, secret: str) -> str:
    """The bridge's ``$7$`` hash, kept beside its secret so a reload does not hash it again."""
    path = folder / "bridge.hash"
    with contextlib.suppress(OSError, ValueError):
        kept, fingerprint = path.read_text().split()
        if fingerprint == _fingerprint(secret):
            return kept
    value = mosquitto_hash(secret)
    _write_private(path, f"{value} {_fingerprint(secret)}\n")
    return value


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def _config(folder: Path, host: str, port: int, tls_port: Optional[int], certs: Optional[dict]) -> str:
    lines = [
        "# Generated by `lake mqtt start` from the lake's device store: edits are overwritten.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {folder / 'passwd'}",
        f"acl_file {folder / 'acl'}",
        "persistence true",
        f"persistence_location {folder}/",
        "autosave_interval 30",
        f"log_dest file {folder / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
        f"max_packet_size {MAX_PACKET_BYTES}",
        f"user {_RUN_AS}",  # used only when started as root: see the module's docstring
        "",
        f"listener {port} {host}",
        "protocol mqtt",
    ]
    if tls_port is not None and certs is not None:
        lines += [
            "",
            f"listener {tls_port} {host}",
            "protocol mqtt",
            f"cafile {certs['ca']}",
            f"certfile {certs['cert']}",
            f"keyfile {certs['key']}",
            "tls_version tlsv1.2",
        ]
    return "\n".join(lines) + "\n"


# -- TLS -------------------------------------------------------------------------------------------


def ensure_certificates(folder: Path, host: str) -> dict:
    """A CA (kept, so clients keep trusting it) and a server certificate for ``host``, 127.0.0.1 and localhost."""
    from cryptography import x509  # noqa: PLC0415 - only for --tls
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    tls = folder / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    _hand_over(tls)
    paths = {"ca": tls / "ca.crt", "ca_key": tls / "ca.key", "cert": tls / "server.crt", "key": tls / "server.key"}
    now = _dt.datetime.now(_dt.timezone.utc)

    def pem_key(key) -> str:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    if paths["ca"].exists() and paths["ca_key"].exists():
        ca_cert = x509.load_pem_x509_certificate(paths["ca"].read_bytes())
        ca_key = serialization.load_pem_private_key(paths["ca_key"].read_bytes(), password=None)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "telemetry lake MQTT CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(paths["ca_key"], pem_key(ca_key), for_mosquitto=False)
        paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        paths["cert"].unlink(missing_ok=True)  # signed by the old CA: make it again

    names = sorted({host, "127.0.0.1", "localhost"} - {"0.0.0.0", "::"})
    if not _certificate_covers(paths["cert"], names):
        key = ec.generate_private_key(ec.SECP256R1())
        alt = []
        for n in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(paths["key"], pem_key(key))
        paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for public in (paths["ca"], paths["cert"]):
        public.chmod(0o644)
    return {k: str(v) for k, v in paths.items()}


def _certificate_covers(path: Path, names: list) -> bool:
    from cryptography import x509  # noqa: PLC0415 - only for --tls

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    have = {str(v) for v in alt.get_values_for_type(x509.IPAddress)} | set(alt.get_values_for_type(x509.DNSName))
    left = cert.not_valid_after_utc - _dt.datetime.now(_dt.timezone.utc)
    return set(names) <= have and left > _dt.timedelta(days=30)


# -- start, stop, reload ---------------------------------------------------------------------------


def _accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)


def start_mosquitto(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    tls: bool = False,
    tls_port: Optional[int] = None,
) -> MosquittoInfo:
    """Start Mosquitto in the background with a configuration made from the device store; return once
    it accepts connections. Idempotent: one this lake root already runs is returned (and reloaded)."""
    info = running_mosquitto(settings)
    if info is not None:
        if info.port != port or (tls and info.tls_port is None):
            raise ConfigError(
                f"this lake's Mosquitto already runs on {info.address} (pid {info.pid}): `lake mqtt stop` first"
            )
        reload_if_running(settings)
        return info
    if not Path(MOSQUITTO).exists():
        raise BrokerStartError(f"{MOSQUITTO} is missing: install Debian's mosquitto package (scripts/system-deps)")
    if tls and tls_port is None:
        tls_port = port + 1
    wanted = [port] + ([tls_port] if tls and tls_port is not None else [])
    for p in wanted:
        if not port_free(host, p):
            raise BrokerStartError(f"port {p} on {host} is taken: stop what listens there or pass --port")
    folder = state_dir(settings)
    _prepare_folder(folder)
    write_auth_files(settings)
    certs = ensure_certificates(folder, host) if tls else None
    config = folder / "mosquitto.conf"
    config.write_text(_config(folder, host, port, tls_port if tls else None, certs))
    log = folder / "mosquitto.log"
    with open(folder / "mosquitto.out", "ab") as out:
        proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the CLI that started it, and its Ctrl-C
        )
    stat = proc_stat(proc.pid)
    info = MosquittoInfo(
        pid=proc.pid,
        start=stat.start if stat else 0,
        host=host,
        port=port,
        config=str(config),
        log=str(log),
        tls_port=tls_port if tls else None,
        ca=certs["ca"] if certs else None,
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not all(_accepts(connect_host(host), p) for p in wanted):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise BrokerStartError(f"Mosquitto did not start: {_tail(folder)}")
        time.sleep(0.05)
    _state_file(settings).write_text(json.dumps(asdict(info)))
    return info


def _tail(folder: Path, lines: int = 3) -> str:
    text = []
    for name in ("mosquitto.out", "mosquitto.log"):
        with contextlib.suppress(OSError):
            text += (folder / name).read_text(errors="replace").splitlines()
    return " | ".join(text[-lines:]) or f"nothing logged (see {folder})"


def stop_mosquitto(settings: Settings, timeout: float = 10.0) -> Optional[MosquittoInfo]:
    """Stop the Mosquitto this lake root started (it saves its persistence file first); None when none runs."""
    info = running_mosquitto(settings)
    if info is None:
        _state_file(settings).unlink(missing_ok=True)
        return None
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while info.is_running() and time.monotonic() < deadline:
        reap([info.pid])
        time.sleep(0.05)
    if info.is_running():
        os.kill(info.pid, signal.SIGKILL)
    reap([info.pid])
    _state_file(settings).unlink(missing_ok=True)
    return info


def reload_if_running(settings: Settings) -> bool:
    """Rewrite the password and ACL files and SIGHUP this lake's Mosquitto; False when none runs."""
    info = running_mosquitto(settings)
    if info is None:
        return False
    write_auth_files(settings)
    os.kill(info.pid, signal.SIGHUP)
    return True


def active_devices(settings: Settings) -> int:
    return sum(d.active for d in DeviceStore(settings.lake_root).load().values())


def devices_fingerprint(settings: Settings) -> str:
    """What Mosquitto's files depend on in the device store: changes when a device is added, rotated or revoked."""
    devices = DeviceStore(settings.lake_root).load()
    text = "\n".join(f"{d.vehicle_id} {d.mosquitto} {d.active}" for d in sorted(devices.values(), key=_vid))
    return hashlib.sha256(text.encode()).hexdigest()


def _vid(device) -> str:
    return device.vehicle_id


def run_foreground(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    tls: bool = False,
    tls_port: Optional[int] = None,
    watch_every_s: float = 5.0,
    on_start: Optional[Callable[[MosquittoInfo], None]] = None,
) -> int:
    """Run Mosquitto until SIGTERM/SIGINT (then stop it, exit 0) or until it dies (exit 1).

    For a container or a service manager, and for a lake whose devices are added elsewhere (another
    container, another machine, a lake on S3): ``lake devices`` there cannot signal this Mosquitto,
    so the device store is read every ``watch_every_s`` seconds and a change reloads it (SIGHUP)."""
    stopping: list = []

    def stop(signum, frame) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        fingerprint = devices_fingerprint(settings)
        info = start_mosquitto(settings, host, port, tls, tls_port)
        if on_start is not None:
            on_start(info)
        next_check = time.monotonic() + watch_every_s
        while not stopping:
            time.sleep(min(watch_every_s, 0.2))
            if not info.is_running():
                _state_file(settings).unlink(missing_ok=True)
                print(f"lake mqtt: Mosquitto (pid {info.pid}) died: {_tail(Path(info.config).parent)}", file=sys.stderr)
                return 1
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + watch_every_s
                try:
                    now = devices_fingerprint(settings)
                except LakeError as exc:  # the store unreadable for a moment: keep serving, say so
                    print(f"lake mqtt: warning: {exc}", file=sys.stderr)
                    continue
                if now != fingerprint:
                    fingerprint = now
                    reload_if_running(settings)
                    print(f"lake mqtt: devices changed: reloaded ({active_devices(settings):,} active)", flush=True)
        stop_mosquitto(settings)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def running(settings: Settings, **kwargs) -> Iterator[MosquittoInfo]:
    """``start_mosquitto`` for the length of a ``with`` block (tests, benchmarks)."""
    info = start_mosquitto(settings, **kwargs)
    try:
        yield info
    finally:
        stop_mosquitto(settings)
