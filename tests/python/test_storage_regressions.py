"""Issue 11: regression tests for nine storage bugs, end to end with boto3 and `requests`
against a 4-drive EC:2 node.

1. two concurrent CompleteMultipartUpload calls for one upload;
2. a Complete refused by its precondition must leave the upload untouched;
3. a part re-uploaded while one drive misses the write (by hand, and on a full drive);
4. two concurrent uploads of one part number;
5. a second server on the same drives, or on the same address;
6. heal of a bucket folder missing on one drive, and of a blank replacement drive;
7. listing prefixes and bounds with `..` or `.` segments stay inside the bucket;
8. browser-form POST uploads are not buffered in memory;
9. a GET in flight keeps reading the version it started on.

Faults are injected through the drive folders; everything that knows the on-disk layout sits
in the "Drive folders" helpers below, and shard files are found by searching, never by path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Callable, Optional

import pytest
import requests
import urllib3
from botocore.exceptions import BotoCoreError, ClientError
from conftest import heal_report, random_bytes, server_binary, wipe_drive

pytestmark = pytest.mark.timeout(300)

MIB = 1024 * 1024
PART_BYTES = 5 * MIB
BUCKET = "data"


@pytest.fixture
def erasure_server(lakeshare_server):
    return lakeshare_server(drives=4, parity=2)


@pytest.fixture
def s3(erasure_server):
    client = erasure_server.s3_client(max_attempts=1)
    client.create_bucket(Bucket=BUCKET)
    return client


# ----- bytes and S3 answers --------------------------------------------------------------------


def md5_etag(body: bytes) -> str:
    return f'"{hashlib.md5(body).hexdigest()}"'


def multipart_etag(bodies: list[bytes]) -> str:
    digests = b"".join(hashlib.md5(body).digest() for body in bodies)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(bodies)}"'


def mismatch(actual: bytes, expected: bytes) -> Optional[str]:
    """None when equal, else where the bytes first differ."""
    if actual == expected:
        return None
    common = min(len(actual), len(expected))
    first = 0
    while first < common and actual[first : first + 4096] == expected[first : first + 4096]:
        first += 4096
    while first < common and actual[first] == expected[first]:
        first += 1
    return f"{len(actual)} bytes, {len(expected)} expected, first difference at byte {first}"


def assert_same_bytes(actual: bytes, expected: bytes, what: str) -> None:
    difference = mismatch(actual, expected)
    assert difference is None, f"{what}: {difference}"


def error_of(error: ClientError) -> tuple[int, str]:
    response = error.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def read_object(s3, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


EXACT = "byte-exact"


def read_outcome(s3, key: str, expected: bytes) -> str:
    """What a GET of `key` gives: `EXACT`, or how it differs from `expected`."""
    try:
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"]
    except ClientError as error:
        return "GET answered {} {}".format(*error_of(error))
    received = bytearray()
    try:
        for chunk in body.iter_chunks(MIB):
            received += chunk
    except (BotoCoreError, OSError) as error:
        difference = mismatch(bytes(received), expected[: len(received)])
        if difference is not None:
            return f"200 with wrong bytes: {difference}, then the body broke: {error!r}"
        return f"200, then the body broke after {len(received)} bytes: {error!r}"
    difference = mismatch(bytes(received), expected)
    return EXACT if difference is None else f"200 with wrong bytes: {difference}"


def upload_parts(s3, key: str, bodies: list[bytes]) -> tuple[str, list[dict]]:
    """Starts an upload of `key` and uploads `bodies` as parts 1..N; returns the upload id
    and the part list for Complete."""
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    parts = []
    for number, body in enumerate(bodies, start=1):
        answer = s3.upload_part(
            Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        assert answer["ETag"] == md5_etag(body)
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    return upload_id, parts


def complete(s3, key: str, upload_id: str, parts: list[dict], **conditions) -> dict:
    return s3.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts},
        **conditions,
    )


def run_at_once(calls: list[Callable[[], object]]) -> list[object]:
    """Runs `calls` on threads released together; returns each result or raised exception."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = calls[index]()
        except Exception as error:  # the caller asserts on it
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return outcomes


# ----- drive folders (the only place that knows the on-disk layout) ----------------------------

SYSTEM_DIR = ".lakeshare.sys"
META_FILE = "lakeshare.meta"


def shard_files(root: Path) -> list[Path]:
    """Erasure-coded part files below `root` (`part.N`, maybe with a suffix), not records."""
    return sorted(
        path for path in root.rglob("part.*")
        if path.is_file() and not path.name.endswith(".meta")
    )


def meta_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob(META_FILE) if path.is_file())


def object_files(drive: Path, key: str) -> tuple[bool, list[Path]]:
    """Whether `drive` holds the metadata of `key` in `BUCKET`, and its shard files there."""
    folder = drive / BUCKET / key
    return (folder / META_FILE).is_file(), shard_files(folder)


def system_records(drive: Path) -> set[str]:
    """The node's own objects (share catalog, tokens) on `drive`, by relative path."""
    area = drive / SYSTEM_DIR / "config"
    return {str(path.parent.relative_to(area)) for path in meta_files(area)}


def drive_snapshot(drive: Path) -> tuple[set[Path], dict[Path, bytes]]:
    """Every folder and file of a drive, to roll it back with `roll_back_drive`."""
    folders = {path for path in drive.rglob("*") if path.is_dir()}
    files = {path: path.read_bytes() for path in drive.rglob("*") if path.is_file()}
    return folders, files


def roll_back_drive(drive: Path, snapshot: tuple[set[Path], dict[Path, bytes]]) -> None:
    """Puts a drive back as `drive_snapshot` saw it, as if it had missed every write since."""
    folders, files = snapshot
    for path in drive.rglob("*"):
        if path.is_file() and path not in files:
            path.unlink()
    for path in sorted(drive.rglob("*"), key=lambda path: len(path.parts), reverse=True):
        if path.is_dir() and path not in folders and not any(path.iterdir()):
            path.rmdir()
    for path, content in files.items():
        if not path.is_file() or path.read_bytes() != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)


def away(drive: Path) -> Path:
    return drive.with_name(drive.name + ".away")


def restart_without(server, gone: list[Path]) -> None:
    """Restarts the server with the folders of `gone` moved away: their data is gone (the
    node may take blank folders in their place)."""
    server.stop()
    for drive in gone:
        drive.rename(away(drive))
    server.start()


def restart_with_all(server, gone: list[Path]) -> None:
    """Undoes `restart_without`: stops, moves the drives back, starts."""
    server.stop()
    for drive in gone:
        if drive.exists():
            shutil.rmtree(drive)
        away(drive).rename(drive)
    server.start()


# ----- bug 1: two Completes of one upload at once ---------------------------------------------

COMPLETE_RACE_ATTEMPTS = 10


def test_r11_complete_twice_at_once(erasure_server, s3):
    """Issue 11, bug 1: two CompleteMultipartUpload calls for one upload at once (an SDK
    retrying after a timeout) answered 200 and InsufficientWriteQuorum, and the object was
    then unreadable. Both must answer 200 with the same ETag, the object must read back
    byte-exact, and a third Complete with the same parts answers 200 with that ETag again."""
    clients = [erasure_server.s3_client(max_attempts=1) for _ in range(2)]
    for attempt in range(COMPLETE_RACE_ATTEMPTS):
        key = f"complete-race/{attempt}"
        bodies = [random_bytes(PART_BYTES) for _ in range(2 + attempt % 2)]
        upload_id, parts = upload_parts(s3, key, bodies)
        expected_etag = multipart_etag(bodies)

        outcomes = run_at_once([
            lambda client=client: complete(client, key, upload_id, parts)["ETag"]
            for client in clients
        ])
        read_back = read_outcome(s3, key, b"".join(bodies))
        assert outcomes == [expected_etag] * 2 and read_back == EXACT, (
            f"attempt {attempt}: the Completes answered {outcomes}; GET: {read_back}"
        )
        assert complete(s3, key, upload_id, parts)["ETag"] == expected_etag, attempt


# ----- bug 2: a Complete refused by its precondition ------------------------------------------


def test_r11_complete_precondition_failure_keeps_parts(s3):
    """Issue 11, bug 2: a Complete refused with 412 (If-None-Match: * on an existing key) had
    already deleted the part files it was not asked to commit; a later plain Complete then
    answered 200 with an object whose last part was gone (GET broke after 10 MiB). The 412
    must leave the upload exactly as it was."""
    key = "conditional/object"
    existing = random_bytes(1000)
    s3.put_object(Bucket=BUCKET, Key=key, Body=existing)
    bodies = [random_bytes(PART_BYTES), random_bytes(PART_BYTES), random_bytes(3 * MIB)]
    upload_id, parts = upload_parts(s3, key, bodies)

    # Both with every part and with the first two only: nothing may be dropped before the
    # condition is decided.
    for asked in (parts, parts[:2]):
        with pytest.raises(ClientError) as excinfo:
            complete(s3, key, upload_id, asked, IfNoneMatch="*")
        assert error_of(excinfo.value) == (412, "PreconditionFailed")

    listed = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)["Parts"]
    assert [(part["PartNumber"], part["ETag"], part["Size"]) for part in listed] == [
        (part["PartNumber"], part["ETag"], len(body)) for part, body in zip(parts, bodies)
    ]
    assert read_object(s3, key) == existing

    assert complete(s3, key, upload_id, parts)["ETag"] == multipart_etag(bodies)
    assert read_outcome(s3, key, b"".join(bodies)) == EXACT


# ----- bug 3: a part re-uploaded while one drive misses the write -----------------------------


def served_wrong_bytes(outcome: str) -> bool:
    return outcome.startswith("200 with wrong bytes")


def test_r11_reupload_missed_by_one_drive(erasure_server, s3):
    """Issue 11, bug 3a: part 1 is uploaded (body A), then again (body B) while drive k misses
    the second write (rolled back by hand to its state before it), for each k: on main the
    drive kept A's shard, GET answered 200 with wrong bytes (from 512 KiB) and heal found
    nothing to heal. GET must be B or an error, heal must rebuild drive k, and afterwards B
    reads back exactly from drive k and one other."""
    drives = erasure_server.drives
    objects = {}
    for index, drive in enumerate(drives):
        key = f"stale/{index}"
        upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        s3.upload_part(
            Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=random_bytes(PART_BYTES)
        )
        before_second_write = drive_snapshot(drive)
        body = random_bytes(PART_BYTES)
        etag = s3.upload_part(
            Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=body
        )["ETag"]
        roll_back_drive(drive, before_second_write)
        assert complete(s3, key, upload_id, [{"PartNumber": 1, "ETag": etag}])["ETag"] == (
            multipart_etag([body])
        )
        objects[index] = (key, body)

    served = {index: read_outcome(s3, key, body) for index, (key, body) in objects.items()}
    wrong = {index: outcome for index, outcome in served.items() if served_wrong_bytes(outcome)}
    assert not wrong, f"GET with drive k rolled back, by k: {wrong}"

    report = heal_report(erasure_server.admin_heal(BUCKET))
    assert report["objects_failed"] == 0, report
    # Drive k and its neighbour alone must now give B.
    for index, (key, body) in objects.items():
        gone = [drive for position, drive in enumerate(drives)
                if position not in (index, (index + 1) % len(drives))]
        restart_without(erasure_server, gone)
        outcome = read_outcome(erasure_server.s3_client(max_attempts=1), key, body)
        restart_with_all(erasure_server, gone)
        assert outcome == EXACT, f"drive {index} after heal, two other drives away: {outcome}"


SMALL_DRIVE_MIB = 24
REUPLOADED_PARTS = 3


@pytest.fixture
def small_first_drive(lakeshare_server):
    """A 4-drive EC:2 server whose first drive is a small tmpfs (needs root)."""
    server = lakeshare_server(drives=4, parity=2, start=False)
    drive = server.drives[0]
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_DRIVE_MIB}m", "tmpfs", str(drive)],
        capture_output=True, text=True,
    )
    if mount.returncode != 0:
        pytest.fail(f"this test needs `mount -t tmpfs` (root): {mount.stderr.strip()}")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        subprocess.run(["umount", "-l", str(drive)], check=False)


def free_bytes(drive: Path) -> int:
    stats = os.statvfs(drive)
    return stats.f_bavail * stats.f_frsize


def test_r11_reupload_on_a_full_drive(small_first_drive):
    """Issue 11, bug 3b: parts are uploaded until the small first drive is full (the upload
    goes on with 3 of 4 drives), then parts 1-3 are uploaded again, which the full drive
    misses: on main the completed object was served with 200 and the old parts' bytes. GET
    must be byte-exact, and with two other drives away it must never serve wrong bytes."""
    server = small_first_drive
    small = server.drives[0]
    s3 = server.s3_client(max_attempts=1)
    s3.create_bucket(Bucket=BUCKET)
    key = "full/object"
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    bodies: dict[int, bytes] = {}
    etags: dict[int, str] = {}

    def upload(number: int) -> None:
        bodies[number] = random_bytes(PART_BYTES)
        etags[number] = s3.upload_part(
            Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=bodies[number]
        )["ETag"]

    # Each 5 MiB part puts 2.5 MiB on each drive; one part more once the small drive cannot
    # take another shard, then the first parts again.
    while free_bytes(small) >= PART_BYTES // 2:
        assert len(bodies) < 2 * SMALL_DRIVE_MIB, "the small drive never filled up"
        upload(len(bodies) + 1)
    upload(len(bodies) + 1)
    for number in range(1, REUPLOADED_PARTS + 1):
        upload(number)

    numbers = sorted(bodies)
    parts = [{"PartNumber": number, "ETag": etags[number]} for number in numbers]
    final = [bodies[number] for number in numbers]
    assert complete(s3, key, upload_id, parts)["ETag"] == multipart_etag(final)
    expected = b"".join(final)
    assert read_outcome(s3, key, expected) == EXACT

    # The full drive and one other: the full drive's shards of parts 1-3 must be the new
    # ones or missing, never the old ones.
    gone = server.drives[1:3]
    restart_without(server, gone)
    outcome = read_outcome(server.s3_client(max_attempts=1), key, expected)
    restart_with_all(server, gone)
    assert not served_wrong_bytes(outcome), f"full drive and one other: {outcome}"


# ----- bug 4: two uploads of one part number at once ------------------------------------------

PART_RACE_ATTEMPTS = 30


def test_r11_same_part_uploaded_twice_at_once(erasure_server, s3):
    """Issue 11, bug 4: two uploads of part 1 at once (30 tries) left objects whose bytes
    were not the body the part's ETag names, some a mix of both bodies. Once both uploads
    answered, ListParts names one ETag, and the object completed with it reads back exactly
    the body with that MD5."""
    clients = [erasure_server.s3_client(max_attempts=1) for _ in range(2)]
    failures = []
    for attempt in range(PART_RACE_ATTEMPTS):
        key = f"part-race/{attempt}"
        racing = [random_bytes(PART_BYTES), random_bytes(PART_BYTES)]
        tail = random_bytes(1000)
        upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        answers = run_at_once([
            lambda client=client, body=body: client.upload_part(
                Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=body
            )["ETag"]
            for client, body in zip(clients, racing)
        ])
        assert answers == [md5_etag(body) for body in racing], f"attempt {attempt}: {answers}"
        tail_etag = s3.upload_part(
            Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=2, Body=tail
        )["ETag"]

        listed = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)["Parts"]
        assert [part["PartNumber"] for part in listed] == [1, 2], f"attempt {attempt}"
        winner = {md5_etag(body): body for body in racing}.get(listed[0]["ETag"])
        assert winner is not None, f"attempt {attempt}: part 1 lists ETag {listed[0]['ETag']}"
        parts = [{"PartNumber": 1, "ETag": listed[0]["ETag"]}, {"PartNumber": 2, "ETag": tail_etag}]
        complete(s3, key, upload_id, parts)
        outcome = read_outcome(s3, key, winner + tail)
        if outcome != EXACT:
            failures.append(f"attempt {attempt}: {outcome}")
    assert not failures, f"{len(failures)} of {PART_RACE_ATTEMPTS} objects: {failures}"


# ----- bug 5: a second server on the same drives or address -----------------------------------

SECOND_SERVER_WAIT_SECONDS = 10


def run_second_server(command: list[str], first) -> tuple[Optional[int], str]:
    """Runs `command` until it exits, for at most `SECOND_SERVER_WAIT_SECONDS`; returns its
    exit code (None when it was still running: then it is stopped) and its stderr."""
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=first.environment(), cwd=first.base_dir, text=True,
    )
    try:
        _, stderr = process.communicate(timeout=SECOND_SERVER_WAIT_SECONDS)
        return process.returncode, stderr
    except subprocess.TimeoutExpired:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
        return None, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def assert_still_serving(server, s3, key: str, body: bytes) -> None:
    assert server.is_running(), "the first server died"
    assert read_object(s3, key) == body
    s3.put_object(Bucket=BUCKET, Key="after-second-server", Body=b"still writable")
    assert read_object(s3, "after-second-server") == b"still writable"


def test_r11_second_server_on_same_drives(erasure_server, s3):
    """Issue 11, bug 5a: a second `lakeshare server` on the drives of a running one started
    (nothing locked the drives) and both accepted requests. The second must exit non-zero
    quickly, saying which drive is in use, and the first keeps serving."""
    body = random_bytes(2 * MIB)
    s3.put_object(Bucket=BUCKET, Key="before", Body=body)
    code, stderr = run_second_server(erasure_server.command(), erasure_server)
    assert code is not None, (
        f"the second server still ran after {SECOND_SERVER_WAIT_SECONDS} s:\n{stderr[-600:]}"
    )
    assert code != 0, stderr
    named = any(str(drive) in stderr for drive in erasure_server.drives)
    assert named or "lock" in stderr.lower() or "in use" in stderr.lower(), stderr
    assert_still_serving(erasure_server, s3, "before", body)


def test_r11_second_server_on_same_address(lakeshare_server, erasure_server, s3):
    """Issue 11, bug 5b: a second server (other drives) on the address of a running one
    started too, sharing the port through SO_REUSEPORT. It must fail to start instead."""
    body = random_bytes(2 * MIB)
    s3.put_object(Bucket=BUCKET, Key="before", Body=body)
    command = lakeshare_server(drives=4, parity=2, start=False).command()
    command[command.index("--address") + 1] = erasure_server.host_port
    code, stderr = run_second_server(command, erasure_server)
    assert code is not None, (
        f"the second server still ran after {SECOND_SERVER_WAIT_SECONDS} s:\n{stderr[-600:]}"
    )
    assert code != 0, stderr
    assert "in use" in stderr.lower() or erasure_server.host_port in stderr, stderr
    assert_still_serving(erasure_server, s3, "before", body)


# ----- bug 6: heal of a bucket folder missing on one drive ------------------------------------

HEALED_OBJECT_SIZES = {
    "inline/one-byte": 1,
    "inline/one-k": 1000,
    "inline/hundred-k": 100 * 1024,
    "big/three-mib": 3 * MIB + 7,
    "big/nine-mib": 9 * MIB,
}


def assert_drive_holds_objects(drive: Path, objects: dict) -> None:
    for key, body in objects.items():
        has_meta, shards = object_files(drive, key)
        assert has_meta, f"no metadata of {key} on {drive}"
        if len(body) > MIB:
            assert shards, f"no shard file of {key} on {drive}"


def assert_reads_without(server, gone: list[Path], objects: dict) -> None:
    """With the drives of `gone` moved away, every object still reads back byte-exact."""
    restart_without(server, gone)
    s3 = server.s3_client(max_attempts=1)
    outcomes = {key: read_outcome(s3, key, body) for key, body in objects.items()}
    restart_with_all(server, gone)
    assert outcomes == {key: EXACT for key in objects}, f"without {gone}"


def test_r11_heal_rebuilds_missing_bucket_folder(erasure_server, s3):
    """Issue 11, bug 6: heal did not rebuild a bucket folder missing on one drive (a replaced
    drive that kept its system area): it answered "objects failed: 0" and the set ran with
    less redundancy. A whole-node heal must put every object's metadata and shards back on
    that drive, so that it and one other drive serve everything. The same holds for a blank
    replacement drive, whose system area (the share catalog) must be healed too."""
    drives = erasure_server.drives
    objects = {key: random_bytes(size) for key, size in HEALED_OBJECT_SIZES.items()}
    for key, body in objects.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    replaced = drives[1]

    erasure_server.stop()
    shutil.rmtree(replaced / BUCKET)
    erasure_server.start()
    report = heal_report(erasure_server.admin_heal())
    assert report["objects_failed"] == 0, report
    assert report["objects_scanned"] >= len(objects), report
    # The background scanner heals one object a second; this heal runs first.
    assert report["shards_rebuilt"] >= 1, report
    assert_drive_holds_objects(replaced, objects)
    assert_reads_without(erasure_server, drives[2:], objects)

    # A blank replacement drive: the objects and the node's own records come back.
    system_before = system_records(drives[0])
    assert system_before, "the node keeps its share catalog in the system area"
    erasure_server.stop()
    wipe_drive(replaced)
    erasure_server.start()
    report = heal_report(erasure_server.admin_heal())
    assert report["objects_failed"] == 0, report
    assert_drive_holds_objects(replaced, objects)
    assert system_records(replaced) == system_before
    assert_reads_without(erasure_server, drives[2:], objects)


# ----- bug 7: listing with `..` walks out of the bucket ---------------------------------------


def listed(answer: dict) -> list[str]:
    return [item["Key"] for item in answer.get("Contents", [])] + [
        item["Prefix"] for item in answer.get("CommonPrefixes", [])
    ]


def continuation_token(last_key: str) -> str:
    """A token for the page after `last_key`, in the node's own (base64) form."""
    return base64.urlsafe_b64encode(last_key.encode()).decode().rstrip("=")


def test_r11_list_dot_segments_stay_in_bucket(s3):
    """Issue 11, bug 7: ListObjectsV2 with prefix "../" listed the other buckets and the
    system area, and "../../../../../../" the host's /etc. Prefixes and bounds with a `..`
    or `.` segment must be refused with 400 and an S3 error code (in ListObjects V1 and V2,
    as prefix, start-after, marker and continuation token); prefixes that merely contain
    dots keep working."""
    s3.create_bucket(Bucket="other")
    s3.put_object(Bucket="other", Key="secret", Body=b"other bucket")
    inside = ["..hidden", "a.b/c", "a/b"]
    for key in inside:
        s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode())

    refused = [
        ("v2", {"Prefix": "../"}),
        ("v2", {"Prefix": "../", "Delimiter": "/"}),
        ("v2", {"Prefix": "../../../../../../", "Delimiter": "/"}),
        ("v2", {"Prefix": "a/../"}),
        ("v2", {"Prefix": "./"}),
        ("v2", {"StartAfter": "../x"}),
        ("v2", {"ContinuationToken": continuation_token("../x")}),
        ("v1", {"Prefix": "../"}),
        ("v1", {"Prefix": "a/../"}),
        ("v1", {"Prefix": "./"}),
        ("v1", {"Marker": "../x"}),
    ]
    wrong = []
    for version, params in refused:
        listing = s3.list_objects_v2 if version == "v2" else s3.list_objects
        try:
            answer = listing(Bucket=BUCKET, **params)
        except ClientError as error:
            status, code = error_of(error)
            if status != 400 or not code:
                wrong.append(f"{version} {params}: {status} {code}")
            continue
        wrong.append(f"{version} {params}: 200 listing {listed(answer)[:6]}")
    assert not wrong, "\n".join(wrong)

    for version in ("v2", "v1"):
        listing = s3.list_objects_v2 if version == "v2" else s3.list_objects
        for prefix, expected in (("..hidden", ["..hidden"]), ("a.b/", ["a.b/c"]), ("a/", ["a/b"])):
            assert listed(listing(Bucket=BUCKET, Prefix=prefix)) == expected, (version, prefix)
        assert listed(listing(Bucket=BUCKET)) == inside, version


# ----- bug 8: browser-form POST uploads buffered in memory ------------------------------------

ANONYMOUS_POST_BYTES = 512 * MIB
PRESIGNED_POST_BYTES = 64 * MIB
FORM_BOUNDARY = "lakeshare-r11-form-boundary"


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


class PeakMemory:
    """How far a process's peak RSS rises above its RSS at the start of a `with` block."""

    def __init__(self, pid: int):
        self.pid = pid
        self.growth_mib = 0.0

    def __enter__(self) -> "PeakMemory":
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # resets VmHWM to VmRSS
        self.start_kib = memory_kib(self.pid)["VmRSS"]
        return self

    def __exit__(self, *exc_info) -> None:
        self.growth_mib = (memory_kib(self.pid)["VmHWM"] - self.start_kib) / 1024


def form_part(name: str, value: str) -> bytes:
    return (
        f'--{FORM_BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
    ).encode()


def stream_form_post(server, fields: dict, file_bytes: int) -> str:
    """POSTs a multipart/form-data body to `/BUCKET`: `fields`, then a file of `file_bytes`
    streamed in 1 MiB chunks, over a raw socket whose answer is read while the body is still
    going out (a node that refuses early may close the connection mid-body). Returns the
    status line, or what went wrong."""
    head = b"".join(form_part(name, value) for name, value in fields.items()) + (
        f'--{FORM_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        'filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{FORM_BOUNDARY}--\r\n".encode()
    request = (
        f"POST /{BUCKET} HTTP/1.1\r\nHost: {server.host_port}\r\n"
        f"Content-Type: multipart/form-data; boundary={FORM_BOUNDARY}\r\n"
        f"Content-Length: {len(head) + file_bytes + len(tail)}\r\n\r\n"
    ).encode()
    # No CR in the file: the node's form parser is not tripped by a partial boundary match.
    chunk = random_bytes(MIB).replace(b"\r", b"\n")
    answer: dict[str, str] = {}
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as connection:

        def read_answer() -> None:
            try:
                status_line = connection.makefile("rb").readline()
                answer["status"] = status_line.decode("latin-1").strip() or "connection closed"
            except OSError as error:
                answer["status"] = f"no answer: {error!r}"

        reader = threading.Thread(target=read_answer, daemon=True)
        reader.start()
        try:
            connection.sendall(request + head)
            for _ in range(file_bytes // MIB):
                if "status" in answer:
                    break
                connection.sendall(chunk)
            connection.sendall(tail)
        except OSError:
            pass  # the node answered and closed early
        reader.join(120)
    return answer.get("status", "no answer in 120 s")


def test_r11_form_post_anonymous_is_not_buffered(erasure_server, s3):
    """Issue 11, bug 8a: a browser-form POST upload was buffered whole before its signature
    was checked: one unauthenticated 512 MiB POST raised the node's RSS by 513 MiB. It must be
    refused with 403 while the node's peak RSS stays far below the body size."""
    with PeakMemory(erasure_server.process.pid) as peak:
        status = stream_form_post(erasure_server, {"key": "anonymous.bin"}, ANONYMOUS_POST_BYTES)
    assert status.split()[1:2] == ["403"], status
    assert peak.growth_mib < 128, f"peak RSS grew {peak.growth_mib:.0f} MiB"
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=BUCKET, Key="anonymous.bin")
    assert error_of(excinfo.value)[0] == 404


def test_r11_form_post_presigned_is_not_buffered(erasure_server, s3):
    """Issue 11, bug 8b: the buffering of bug 8a also holds every valid form upload in
    memory. A presigned POST (boto3 generate_presigned_post) of a 64 MiB file must store it
    byte-exact, with the node's peak RSS growing well below the file size."""
    body = random_bytes(PRESIGNED_POST_BYTES)
    post = s3.generate_presigned_post(BUCKET, "presigned.bin", ExpiresIn=600)
    with PeakMemory(erasure_server.process.pid) as peak:
        response = requests.post(
            post["url"], data=post["fields"], files={"file": ("presigned.bin", body)}, timeout=120
        )
    assert response.status_code in (200, 201, 204), response.text[:400]
    assert read_outcome(s3, "presigned.bin", body) == EXACT
    assert peak.growth_mib < PRESIGNED_POST_BYTES / MIB / 2, (
        f"peak RSS grew {peak.growth_mib:.0f} MiB for a {PRESIGNED_POST_BYTES // MIB} MiB file"
    )


# ----- bug 9: a GET in flight while its object changes ----------------------------------------

IN_FLIGHT_OBJECT_BYTES = 64 * MIB
IN_FLIGHT_PART_BYTES = 8 * MIB


def change_object(erasure_server, key: str, change: str) -> None:
    """Overwrites or deletes `key` from a client of its own."""
    other = erasure_server.s3_client(max_attempts=1)
    if change == "overwrite":
        other.put_object(Bucket=BUCKET, Key=key, Body=random_bytes(8 * MIB))
    else:
        other.delete_object(Bucket=BUCKET, Key=key)


@pytest.mark.parametrize("change", ["overwrite", "delete"])
@pytest.mark.parametrize("reader", ["boto3", "presigned"])
def test_r11_get_in_flight_keeps_its_version(erasure_server, s3, reader, change):
    """Issue 11, bug 9: a GET in flight while its object was overwritten or deleted broke
    after 10 MiB with a protocol error. A reader that has started gets the whole version it
    started on: 1 MiB is read, the key is overwritten (or deleted) by another client, and the
    rest of the body must complete the original (64 MiB in 8 parts) exactly."""
    key = "in-flight/object"
    bodies = [random_bytes(IN_FLIGHT_PART_BYTES)
              for _ in range(IN_FLIGHT_OBJECT_BYTES // IN_FLIGHT_PART_BYTES)]
    original = b"".join(bodies)
    # In parts, so that the reader opens part files while the body goes out.
    complete(s3, key, *upload_parts(s3, key, bodies))

    if reader == "boto3":
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"]
        read = body.read
    else:
        url = s3.generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=600
        )
        response = requests.get(url, stream=True, timeout=120)
        assert response.status_code == 200
        read = response.raw.read
    received = bytearray(read(MIB))
    change_object(erasure_server, key, change)
    broken = None
    try:
        while chunk := read(MIB):
            received += chunk
    except (BotoCoreError, OSError, urllib3.exceptions.HTTPError) as error:
        broken = error
    assert broken is None, f"the body broke after {len(received)} bytes: {broken!r}"
    assert_same_bytes(bytes(received), original, f"GET in flight across the {change}")


# ----- found by the 10,000-connection measurement: out of file handles is not lost quorum -----

HANDLES_OPEN_FILES_LIMIT = 1024
HANDLES_CONNECTIONS = 2000
HANDLES_REQUESTS = 8000


def loadtest_binary() -> Path:
    binary = server_binary().with_name("loadtest")
    if not binary.exists():
        pytest.fail(f"loadtest binary not found at {binary}: run `cargo build --release`")
    return binary


def test_r11_out_of_file_handles_waits_instead_of_failing(lakeshare_server):
    """With thousands of connections the node ran out of file handles (EMFILE) and answered
    GETs with 503 InsufficientReadQuorum ("0 of 4 drives hold readable metadata") although
    every drive was sound: 7610 of 8000 GETs from 2000 connections under an open-files limit of
    1024. Now connections leave handles for the drives and a shortage is waited out: every
    GET succeeds, and the objects read back exactly afterwards."""
    server = lakeshare_server(drives=4, parity=2, open_files_limit=HANDLES_OPEN_FILES_LIMIT)
    s3 = server.s3_client(max_attempts=1)
    s3.create_bucket(Bucket=BUCKET)
    bodies = {"obj-0": random_bytes(4096), "obj-1": random_bytes(MIB + 5)}
    for key, body in bodies.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    storm = subprocess.run(
        [str(loadtest_binary()), "--json", "get", "--endpoint", server.endpoint,
         "--bucket", BUCKET, "--objects", "2", "--concurrency", str(HANDLES_CONNECTIONS),
         "--requests", str(HANDLES_REQUESTS),
         "--access-key", server.access_key, "--secret-key", server.secret_key],
        capture_output=True, text=True, timeout=300,
    )
    assert storm.returncode == 0, storm.stderr
    report = json.loads(storm.stdout)
    assert (report["ok"], report["errors"]) == (HANDLES_REQUESTS, {}), report
    for key, body in bodies.items():
        assert_same_bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read(), body, key)
