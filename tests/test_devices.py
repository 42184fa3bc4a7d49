"""Device credentials (contract section 8): ``lake devices add|revoke|list`` and the store behind them."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import threading

import pytest

from lake.cli import main
from lake.query import query
from lake_core.devices import (
    Authenticator,
    DeviceStore,
    credentials_path,
    mosquitto_hash,
    scrypt_verify,
    secret_vehicle,
)
from lake_core.errors import LakeError


def _add(root, capsys, *vehicles, extra=()):
    assert main(["devices", "add", *vehicles, "--lake-root", root, "--format", "json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_add_prints_each_secret_once_and_stores_only_salted_slow_hashes(tmp_path, capsys):
    root = str(tmp_path)
    secrets = _add(root, capsys, "V1", "V2", extra=["--type", "ebike"])
    assert set(secrets) == {"V1", "V2"} and secrets["V1"] != secrets["V2"]
    assert secret_vehicle(secrets["V1"]) == "V1"
    raw = open(credentials_path(root)).read()
    for secret in secrets.values():
        assert secret not in raw and secret.rsplit(".", 1)[1] not in raw
    assert stat.S_IMODE(os.stat(credentials_path(root)).st_mode) == 0o600
    devices = DeviceStore(root).load()
    assert devices["V1"].scrypt.startswith("scrypt$16384$8$1$")
    assert devices["V1"].mosquitto.startswith("$7$")
    assert devices["V1"].scrypt != devices["V2"].scrypt  # salted
    assert scrypt_verify(secrets["V1"], devices["V1"].scrypt)
    assert not scrypt_verify(secrets["V2"], devices["V1"].scrypt)
    # the registry knows them, with their type
    rows = query("SELECT vehicle_id, vehicle_type FROM dims_vehicles ORDER BY vehicle_id", root).to_pylist()
    assert rows == [{"vehicle_id": "V1", "vehicle_type": "ebike"}, {"vehicle_id": "V2", "vehicle_type": "ebike"}]


def test_list_shows_state_and_never_a_secret(tmp_path, capsys):
    root = str(tmp_path)
    secrets = _add(root, capsys, "V1", "V2")
    assert main(["devices", "revoke", "V2", "--lake-root", root]) == 0
    capsys.readouterr()
    assert main(["devices", "list", "--lake-root", root, "--format", "json"]) == 0
    out = capsys.readouterr().out
    rows = {r["vehicle_id"]: r for r in json.loads(out)}
    assert rows["V1"]["state"] == "active" and rows["V2"]["state"] == "revoked" and rows["V2"]["revoked_at"]
    assert main(["devices", "list", "--lake-root", root]) == 0
    text = capsys.readouterr().out
    assert "2 device(s), 1 active" in text
    for secret in secrets.values():
        assert secret not in out and secret not in text
    assert "scrypt" not in out + text and "$7$" not in out + text


def test_adding_an_active_device_again_needs_rotate_and_rotation_retires_the_old_secret(tmp_path, capsys):
    root = str(tmp_path)
    old = _add(root, capsys, "V1")["V1"]
    assert main(["devices", "add", "V1", "--lake-root", root]) == 1
    assert "--rotate" in capsys.readouterr().err
    new = _add(root, capsys, "V1", extra=["--rotate"])["V1"]
    auth = Authenticator(root)
    assert auth.verify(new).vehicle_id == "V1"
    assert auth.verify(old) is None


@pytest.mark.parametrize("bad", ["V 1", "", "x" * 65, "V1/../../etc", "V.1"])
def test_a_bad_vehicle_id_is_a_clear_error(tmp_path, capsys, bad):
    assert main(["devices", "add", bad, "--lake-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a vehicle id" in err and "Traceback" not in err
    assert not os.path.exists(credentials_path(str(tmp_path)))


def test_revoking_an_unknown_device_is_a_clear_error(tmp_path, capsys):
    assert main(["devices", "revoke", "NOPE", "--lake-root", str(tmp_path)]) == 1
    assert "no device 'NOPE'" in capsys.readouterr().err


def test_the_authenticator_refuses_wrong_unknown_and_revoked_secrets_and_sees_a_revocation(tmp_path, capsys):
    root = str(tmp_path)
    secrets = _add(root, capsys, "V1", "V2")
    auth = Authenticator(root, refresh_s=0.0)
    assert auth.verify(secrets["V1"]).vehicle_id == "V1"
    assert auth.verify(secrets["V1"]).vehicle_id == "V1"  # the cached path
    forged = secrets["V1"][:-2] + ("AA" if not secrets["V1"].endswith("AA") else "BB")
    assert auth.verify(forged) is None  # cached fingerprint differs: refused without a scrypt
    assert auth.verify("lk1.V3." + secrets["V1"].rsplit(".", 1)[1]) is None  # unknown vehicle
    assert auth.verify(secrets["V2"].replace("V2", "V1", 1)) is None  # V2's random part as V1
    for junk in ["", "Bearer", "lk1..x", "lk1.V1", "a.b.c.d", "\x00" * 10]:
        assert auth.verify(junk) is None
    DeviceStore(root).revoke("V1")
    assert auth.verify(secrets["V1"]) is None
    assert auth.verify(secrets["V2"]).vehicle_id == "V2"


def test_concurrent_adds_lose_nothing(tmp_path):
    """Two ``lake devices add`` at once: read-modify-write under the lease keeps both."""
    root = str(tmp_path)
    results: dict = {}

    def add(prefix):
        results[prefix] = DeviceStore(root).add_many([(f"{prefix}{i}", "car") for i in range(5)])

    threads = [threading.Thread(target=add, args=(p,)) for p in ("A", "B", "C")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(DeviceStore(root).load()) == {f"{p}{i}" for p in "ABC" for i in range(5)}


def test_a_corrupt_credentials_file_is_a_clear_error(tmp_path):
    root = str(tmp_path)
    os.makedirs(os.path.dirname(credentials_path(root)))
    with open(credentials_path(root), "w") as f:
        f.write("{not json")
    with pytest.raises(LakeError, match="is not a device credentials file"):
        DeviceStore(root).load()


def test_mosquitto_hash_is_what_mosquitto_passwd_writes(tmp_path):
    """Same format as Mosquitto's own tool, so Mosquitto checks our secrets: hash a secret with the salt
    and iterations mosquitto_passwd chose, and get its line back."""
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed (scripts/system-deps installs it)")
    pw = tmp_path / "pw"
    pw.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "V1", "lk1.V1.abc"], check=True)
    line = pw.read_text().strip().split(":", 1)[1]
    _, _, iterations, salt, _ = line.split("$")
    assert mosquitto_hash("lk1.V1.abc", salt=base64.b64decode(salt), iterations=int(iterations)) == line
