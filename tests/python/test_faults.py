"""Issue 2, test 5: faults on a 4-drive erasure set (EC:2).

Faults are injected through the documented on-disk layout:
`<drive>/.lakeshare.sys/{format.json,tmp/,multipart/}`, `<drive>/<bucket>/<key>/lakeshare.meta`
and shard files `part.N` in a data folder under `<drive>/<bucket>/<key>/` (found by searching, so
the exact nesting may change); objects small enough to be inline have no part file.
"""

import hashlib
import http.client
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from conftest import heal_report, random_bytes, wipe_drive

pytestmark = pytest.mark.timeout(600)

MIB = 1024 * 1024
DRIVE_COUNT = 4
PARITY = 2
OBJECT_SIZES = {
    "small/inline-1": 1,
    "small/inline-1k": 1000,
    "small/inline-100k": 100 * 1024,
    "big/three-mib": 3 * MIB + 7,
    "big/nine-mib": 9 * MIB,
    "big/twenty-mib": 20 * MIB + 12345,
}


@pytest.fixture
def erasure_server(lakeshare_server):
    return lakeshare_server(drives=DRIVE_COUNT, parity=PARITY)


@pytest.fixture
def stored_objects(erasure_server):
    s3 = erasure_server.s3_client()
    s3.create_bucket(Bucket="data")
    objects = {}
    for key, size in sorted(OBJECT_SIZES.items()):
        objects[key] = random_bytes(size)
        s3.put_object(Bucket="data", Key=key, Body=objects[key])
    return objects


def shard_files(drive: Path, bucket: str, key: str) -> dict:
    """Relative path → bytes of every part file of `key` on `drive`."""
    object_dir = drive / bucket / key
    return {
        str(path.relative_to(object_dir)): path.read_bytes()
        for path in sorted(object_dir.rglob("part.*"))
        if path.is_file()
    }


def assert_reads_exact(server, objects: dict, max_attempts: int = 1) -> None:
    s3 = server.s3_client(max_attempts=max_attempts)
    for key, data in objects.items():
        body = s3.get_object(Bucket="data", Key=key)["Body"].read()
        assert len(body) == len(data), key
        assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest(), key


def test_layout_has_format_stamps_and_shards(erasure_server, stored_objects):
    for drive in erasure_server.drives:
        assert (drive / ".lakeshare.sys" / "format.json").is_file(), drive
        for key in OBJECT_SIZES:
            assert (drive / "data" / key / "lakeshare.meta").is_file(), (drive, key)
        assert shard_files(drive, "data", "big/nine-mib"), f"no part file on {drive}"
    # A 9 MiB object on 2 data + 2 parity drives puts about half of it on each drive.
    total_shard_bytes = sum(
        len(content)
        for drive in erasure_server.drives
        for content in shard_files(drive, "data", "big/nine-mib").values()
    )
    assert total_shard_bytes >= 2 * 9 * MIB


def test_two_wiped_drives_still_read_byte_exact(erasure_server, stored_objects):
    for drive in erasure_server.drives[:PARITY]:
        wipe_drive(drive)
    assert_reads_exact(erasure_server, stored_objects)
    listed = erasure_server.s3_client().list_objects_v2(Bucket="data")["Contents"]
    assert sorted(item["Key"] for item in listed) == sorted(stored_objects)

    # After a restart the blank drives are accepted as replacements, and still nothing is lost.
    erasure_server.restart()
    assert_reads_exact(erasure_server, stored_objects, max_attempts=3)


def test_wiped_drives_are_healed(erasure_server, stored_objects):
    wiped = erasure_server.drives[1:3]
    before = {
        key: shard_files(wiped[0], "data", key) for key in OBJECT_SIZES if key.startswith("big/")
    }
    for drive in wiped:
        wipe_drive(drive)
    erasure_server.restart()
    report = heal_report(erasure_server.admin_heal("data"))
    assert report["objects_failed"] == 0
    assert report["objects_scanned"] >= len(OBJECT_SIZES)
    for drive in wiped:
        for key in OBJECT_SIZES:
            assert (drive / "data" / key / "lakeshare.meta").is_file(), (drive, key)
    for key, shards in before.items():
        assert shard_files(wiped[0], "data", key) == shards, key
    # The healed drives now carry the data: losing the two others keeps every object readable.
    erasure_server.stop()
    for drive in (erasure_server.drives[0], erasure_server.drives[3]):
        wipe_drive(drive)
    erasure_server.start()
    assert_reads_exact(erasure_server, stored_objects, max_attempts=3)


def test_flipped_shard_bytes_read_exact_and_heal(erasure_server, stored_objects):
    key = "big/nine-mib"
    drive = erasure_server.drives[0]
    original = shard_files(drive, "data", key)
    assert original, "a 9 MiB object must have part files"
    relative_path, content = next(iter(original.items()))
    part_path = drive / "data" / key / relative_path
    corrupted = bytearray(content)
    for offset in (40, len(content) // 2, len(content) - 5):
        corrupted[offset] ^= 0xFF
    part_path.write_bytes(bytes(corrupted))
    assert part_path.read_bytes() != content

    # Reads never return the flipped bytes: the bitrot hash catches them.
    assert_reads_exact(erasure_server, {key: stored_objects[key]})
    s3 = erasure_server.s3_client(max_attempts=1)
    middle = len(stored_objects[key]) // 2
    ranged = s3.get_object(Bucket="data", Key=key, Range=f"bytes={middle - 100}-{middle + 100}")
    assert ranged["Body"].read() == stored_objects[key][middle - 100 : middle + 101]

    report = heal_report(erasure_server.admin_heal("data/big/"))
    assert report["objects_failed"] == 0
    assert report["objects_scanned"] >= 1
    assert shard_files(drive, "data", key) == original, "heal must restore the shard exactly"
    assert_reads_exact(erasure_server, stored_objects)


def test_three_drives_gone_is_503_never_wrong_bytes(erasure_server, stored_objects):
    for drive in erasure_server.drives[:3]:
        shutil.rmtree(drive)
    s3 = erasure_server.s3_client(max_attempts=1)
    for key in stored_objects:
        with pytest.raises(ClientError) as excinfo:
            s3.get_object(Bucket="data", Key=key)["Body"].read()
        response = excinfo.value.response
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 503, (key, response)
        assert response["Error"]["Code"] == "InsufficientReadQuorum", (key, response)
    # Writes cannot reach quorum either, and say so instead of pretending to succeed.
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket="data", Key="new", Body=b"x" * (2 * MIB))
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    # The node still answers requests that need no drive.
    assert erasure_server.signed_request("GET", "/").status in (200, 503)


def send_partial_upload(server, key: str, declared_bytes: int, sent_bytes_max: int,
                        sent_event: threading.Event, outcome: dict) -> None:
    """Streams a PUT declaring `declared_bytes`, sets `sent_event` after `sent_bytes_max`
    bytes, and keeps sending until the connection breaks."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config
    from botocore.credentials import Credentials

    path = f"/data/{key}"
    request = AWSRequest(
        method="PUT",
        url=f"{server.endpoint}{path}",
        headers={"Content-Length": str(declared_bytes)},
    )
    request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    S3SigV4Auth(Credentials(server.access_key, server.secret_key), "s3", "us-east-1").add_auth(
        request
    )
    assert request.headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    chunk = random_bytes(4 * MIB)
    sent = 0
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        connection.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", server.host_port)
        for name, value in request.headers.items():
            if name.lower() != "host":
                connection.putheader(name, value)
        connection.endheaders()
        while sent < declared_bytes:
            connection.send(chunk)
            sent += len(chunk)
            if sent >= sent_bytes_max:
                sent_event.set()
        outcome["status"] = connection.getresponse().status
    except OSError as error:
        outcome["error"] = repr(error)
    finally:
        outcome["sent"] = sent
        sent_event.set()
        connection.close()


def test_kill_9_during_1_gib_upload_leaves_nothing(erasure_server, stored_objects):
    sent_event = threading.Event()
    outcome: dict = {}
    uploader = threading.Thread(
        target=send_partial_upload,
        args=(erasure_server, "partial/one-gib", 1024 * MIB, 256 * MIB, sent_event, outcome),
        daemon=True,
    )
    uploader.start()
    assert sent_event.wait(300), "the upload never got going"
    erasure_server.kill9()
    uploader.join(120)
    assert "status" not in outcome, f"the upload must not complete: {outcome}"
    assert 256 * MIB <= outcome["sent"] < 1024 * MIB, outcome

    erasure_server.start()
    s3 = erasure_server.s3_client()
    listed = s3.list_objects_v2(Bucket="data").get("Contents", [])
    assert "partial/one-gib" not in [item["Key"] for item in listed]
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket="data", Key="partial/one-gib")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    for drive in erasure_server.drives:
        tmp_dir = drive / ".lakeshare.sys" / "tmp"
        leftovers = [str(path) for path in tmp_dir.rglob("*")] if tmp_dir.exists() else []
        assert leftovers == [], f"temp space not reclaimed on {drive}: {leftovers[:10]}"
        assert not (drive / "data" / "partial" / "one-gib").exists()
    assert_reads_exact(erasure_server, stored_objects)


@pytest.fixture
def tiny_drives(lakeshare_server, tmp_path_factory):
    """A 4-drive server whose first two drives are 8 MiB tmpfs mounts (root only)."""
    server = lakeshare_server(drives=DRIVE_COUNT, parity=PARITY, start=False)
    mounted = []
    for drive in server.drives[:2]:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(drive)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            for mount_point in mounted:
                subprocess.run(["umount", str(mount_point)], check=False)
            pytest.skip(f"full-drive test needs `mount -t tmpfs` (root): {result.stderr.strip()}")
        mounted.append(drive)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        for mount_point in mounted:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_drives_give_a_clear_error_and_keep_objects(tiny_drives):
    s3 = tiny_drives.s3_client(max_attempts=1)
    s3.create_bucket(Bucket="data")
    existing = {"small/a": random_bytes(1000), "big/four-mib": random_bytes(4 * MIB)}
    for key, data in existing.items():
        s3.put_object(Bucket="data", Key=key, Body=data)

    # 64 MiB at EC:2 puts 32 MiB on each drive: two 8 MiB drives fill, write quorum is lost.
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket="data", Key="big/too-big", Body=random_bytes(64 * MIB))
    response = excinfo.value.response
    status = response["ResponseMetadata"]["HTTPStatusCode"]
    assert status >= 400, response
    assert response["Error"]["Code"], "the failure must carry an S3 error code"

    listed = [item["Key"] for item in s3.list_objects_v2(Bucket="data").get("Contents", [])]
    assert sorted(listed) == sorted(existing)
    assert_reads_exact(tiny_drives, existing)
    # The failed write gave its space back: a small write succeeds again.
    s3.put_object(Bucket="data", Key="small/after", Body=b"still writable")
    assert s3.get_object(Bucket="data", Key="small/after")["Body"].read() == b"still writable"
