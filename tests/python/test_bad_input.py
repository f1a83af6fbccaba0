"""Issue 2, test 6: bad input gets the right S3 error, and the node keeps serving others.

Requests that clients refuse to build (bad keys, bad bucket names, malformed XML) are signed
with SigV4 and sent verbatim through `server.signed_request`; hostile connections (huge header
blocks, slowloris) use raw sockets.
"""

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import quote_key

pytestmark = pytest.mark.timeout(180)

MIB = 1024 * 1024


def error_of(excinfo) -> tuple:
    response = excinfo.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


@pytest.fixture
def s3(server):
    client = server.s3_client(max_attempts=1)
    client.create_bucket(Bucket="bucket")
    return client


def assert_still_serving(s3) -> None:
    key = f"alive-{time.monotonic_ns()}"
    s3.put_object(Bucket="bucket", Key=key, Body=b"alive")
    assert s3.get_object(Bucket="bucket", Key=key)["Body"].read() == b"alive"


def test_wrong_secret_is_signature_does_not_match(server, s3):
    bad = server.s3_client(secret_key="not-the-secret", max_attempts=1)
    with pytest.raises(ClientError) as excinfo:
        bad.list_buckets()
    assert error_of(excinfo) == (403, "SignatureDoesNotMatch")
    with pytest.raises(ClientError) as excinfo:
        bad.put_object(Bucket="bucket", Key="forged", Body=b"forged")
    assert error_of(excinfo) == (403, "SignatureDoesNotMatch")
    assert "Contents" not in s3.list_objects_v2(Bucket="bucket")


def test_unknown_access_key_is_refused(server, s3):
    stranger = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id="NOBODY",
        aws_secret_access_key="whatever",
        config=Config(region_name="us-east-1", s3={"addressing_style": "path"},
                      retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as excinfo:
        stranger.list_objects_v2(Bucket="bucket")
    assert error_of(excinfo) == (403, "InvalidAccessKeyId")


def test_expired_presigned_url_is_403(s3):
    s3.put_object(Bucket="bucket", Key="soon-gone", Body=b"secret bytes")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "bucket", "Key": "soon-gone"}, ExpiresIn=1
    )
    time.sleep(3)
    response = requests.get(url, timeout=30)
    assert response.status_code == 403
    assert b"secret bytes" not in response.content
    assert b"<Code>" in response.content


def test_malformed_xml_complete_multipart_upload(server, s3):
    upload_id = s3.create_multipart_upload(Bucket="bucket", Key="multi")["UploadId"]
    s3.upload_part(Bucket="bucket", Key="multi", UploadId=upload_id, PartNumber=1, Body=b"x" * 10)
    for body in (b"<CompleteMultipartUpload><Part>", b"this is not xml", b"<a></b>"):
        response = server.signed_request(
            "POST", "/bucket/multi", query=f"uploadId={upload_id}", body=body
        )
        assert response.status == 400, response
        assert response.error_code == "MalformedXML", response
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket="bucket", Key="multi")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    s3.abort_multipart_upload(Bucket="bucket", Key="multi", UploadId=upload_id)


def test_malformed_xml_delete_objects(server, s3):
    import base64
    import hashlib

    s3.put_object(Bucket="bucket", Key="keep", Body=b"keep")
    for body in (b"<Delete><Object><Key>keep</Key></Object>", b"garbage", b"<Delete><Object>"):
        content_md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        response = server.signed_request(
            "POST", "/bucket", query="delete", body=body, headers={"Content-MD5": content_md5}
        )
        assert response.status == 400, response
        assert response.error_code == "MalformedXML", response
    assert s3.get_object(Bucket="bucket", Key="keep")["Body"].read() == b"keep"


@pytest.mark.parametrize(
    "key",
    ["..", "../escape", "a/../../escape", "a/..", "a/../b", "a\x00b", "nul\x00", "k" * 1025],
    ids=["dotdot", "dotdot-prefix", "dotdot-climb", "dotdot-suffix", "dotdot-middle", "nul",
         "nul-end", "1025-bytes"],
)
def test_bad_keys_are_400(server, s3, key):
    response = server.signed_request("PUT", "/bucket/" + quote_key(key), body=b"payload")
    assert response.status == 400, response
    assert response.error_code, f"an S3 error code is expected: {response}"
    listed = s3.list_objects_v2(Bucket="bucket")
    assert "Contents" not in listed, listed
    drive = server.drives[0]
    assert sorted(entry.name for entry in drive.iterdir()) == [".lakeshare.sys", "bucket"]
    assert not (drive.parent / "escape").exists()
    assert_still_serving(s3)


def test_key_of_exactly_1024_bytes_is_accepted(s3):
    key = "/".join(["k" * 200] * 5)
    key += "x" * (1024 - len(key))
    assert len(key.encode()) == 1024
    s3.put_object(Bucket="bucket", Key=key, Body=b"long key")
    assert s3.get_object(Bucket="bucket", Key=key)["Body"].read() == b"long key"


@pytest.mark.parametrize("bucket", ["Uppercase", "ab", "_x", "bad_name", "-dash", "a" * 64])
def test_invalid_bucket_names_are_400(server, s3, bucket):
    response = server.signed_request("PUT", f"/{bucket}")
    assert response.status == 400, response
    assert response.error_code == "InvalidBucketName", response
    names = [entry["Name"] for entry in s3.list_buckets()["Buckets"]]
    assert names == ["bucket"]


def test_valid_bucket_names_are_accepted(s3):
    for bucket in ("abc", "a.b-c", "x" * 63):
        s3.create_bucket(Bucket=bucket)
    names = sorted(entry["Name"] for entry in s3.list_buckets()["Buckets"])
    assert names == sorted(["abc", "a.b-c", "x" * 63, "bucket"])


def send_hostile_request(port: int, request: bytes) -> bytes:
    """Sends `request`, then reads what comes back; b"" when the server closed instead."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        try:
            connection.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while True:
                data = connection.recv(65536)
                if not data:
                    break
                received += data
                if b"\r\n\r\n" in received:
                    break
        except ConnectionResetError:
            pass
        return received


@pytest.mark.parametrize("shape", ["one-header", "many-headers"])
def test_10_mib_header_block_is_refused(server, s3, shape):
    if shape == "one-header":
        block = b"X-Fill: " + b"a" * (10 * MIB) + b"\r\n"
    else:
        block = b"".join(b"X-Fill-%d: %s\r\n" % (index, b"b" * 1000) for index in range(10 * 1024))
    request = (
        b"GET /bucket HTTP/1.1\r\nHost: " + server.host_port.encode() + b"\r\n" + block + b"\r\n"
    )
    received = send_hostile_request(server.port, request)
    if received:
        status_line = received.split(b"\r\n", 1)[0]
        assert status_line.split(b" ")[1] in (b"431", b"400"), status_line
    assert_still_serving(s3)


def slowloris(port: int, stop: threading.Event, bytes_sent: list, index: int) -> None:
    header = b"GET /bucket HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 4096
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            for byte in header:
                if stop.is_set():
                    return
                connection.sendall(bytes([byte]))
                bytes_sent[index] += 1
                stop.wait(1.0)
    except OSError:
        return  # the server may drop a slow client: that is allowed


def test_slowloris_does_not_block_other_clients(server, s3):
    slow_client_count = 32
    stop = threading.Event()
    bytes_sent = [0] * slow_client_count
    threads = [
        threading.Thread(target=slowloris, args=(server.port, stop, bytes_sent, index), daemon=True)
        for index in range(slow_client_count)
    ]
    for thread in threads:
        thread.start()
    try:
        # Wait until every slow client has its connection open and trickling (or was dropped).
        while any(
            thread.is_alive() and sent < 3 for thread, sent in zip(threads, bytes_sent)
        ):
            time.sleep(0.2)
        # Every worker thread now holds slow connections; other clients must still be served.
        with ThreadPoolExecutor(8) as pool:
            keys = [f"fast-{index}" for index in range(40)]
            list(pool.map(lambda key: s3.put_object(Bucket="bucket", Key=key, Body=key.encode()),
                          keys))
            bodies = list(
                pool.map(lambda key: s3.get_object(Bucket="bucket", Key=key)["Body"].read(), keys)
            )
        assert bodies == [key.encode() for key in keys]
        time.sleep(2)
        assert_still_serving(s3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
