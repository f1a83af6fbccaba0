"""Issue 2, test 3: boto3 against the node: multipart, ranges, listing, deletes, copies,
conditional writes and presigned URLs read with a plain HTTP client."""

import hashlib
import io
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from conftest import random_bytes

pytestmark = pytest.mark.timeout(300)

MIB = 1024 * 1024
BIG_OBJECT_BYTES = 64 * MIB
PART_BYTES = 8 * MIB
LISTED_KEY_COUNT = 2500


def error_of(excinfo) -> tuple:
    response = excinfo.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


@pytest.fixture
def s3(server):
    client = server.s3_client()
    client.create_bucket(Bucket="bucket")
    return client


@pytest.fixture
def big_object(s3):
    """A 64 MiB object uploaded in 8 MiB parts; returns its bytes."""
    data = random_bytes(BIG_OBJECT_BYTES)
    config = TransferConfig(
        multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES, max_concurrency=4
    )
    s3.upload_fileobj(io.BytesIO(data), "bucket", "big.bin", Config=config)
    return data


def test_multipart_upload_64_mib_reads_back_byte_exact(s3, big_object):
    head = s3.head_object(Bucket="bucket", Key="big.bin")
    assert head["ContentLength"] == BIG_OBJECT_BYTES
    # A multipart ETag is "<md5 of part md5s>-<part count>".
    part_digests = b"".join(
        hashlib.md5(big_object[offset : offset + PART_BYTES]).digest()
        for offset in range(0, BIG_OBJECT_BYTES, PART_BYTES)
    )
    expected_etag = f'"{hashlib.md5(part_digests).hexdigest()}-{BIG_OBJECT_BYTES // PART_BYTES}"'
    assert head["ETag"] == expected_etag

    body = s3.get_object(Bucket="bucket", Key="big.bin")["Body"].read()
    assert len(body) == BIG_OBJECT_BYTES
    assert hashlib.sha256(body).digest() == hashlib.sha256(big_object).digest()
    assert s3.list_multipart_uploads(Bucket="bucket").get("Uploads", []) == []


@pytest.mark.parametrize(
    "range_header, first, last",
    [
        ("bytes=0-99", 0, 99),
        ("bytes=1048000-3146000", 1048000, 3146000),  # crosses 1 MiB block boundaries
        ("bytes=16777216-16777216", 16777216, 16777216),
        ("bytes=-500", BIG_OBJECT_BYTES - 500, BIG_OBJECT_BYTES - 1),  # suffix range
        ("bytes=67100000-", 67100000, BIG_OBJECT_BYTES - 1),  # open range
    ],
)
def test_ranged_get(s3, big_object, range_header, first, last):
    response = s3.get_object(Bucket="bucket", Key="big.bin", Range=range_header)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert response["ContentRange"] == f"bytes {first}-{last}/{BIG_OBJECT_BYTES}"
    assert response["ContentLength"] == last - first + 1
    assert response["Body"].read() == big_object[first : last + 1]


def test_range_beyond_the_end_is_416(s3):
    s3.put_object(Bucket="bucket", Key="small", Body=b"0123456789")
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket="bucket", Key="small", Range="bytes=100-200")
    assert error_of(excinfo) == (416, "InvalidRange")
    response = s3.get_object(Bucket="bucket", Key="small", Range="bytes=2-4")
    assert response["Body"].read() == b"234"


@pytest.fixture
def many_keys(s3):
    keys = [f"many/dir{index % 5}/object-{index:05}" for index in range(LISTED_KEY_COUNT)]

    def put(key):
        s3.put_object(Bucket="bucket", Key=key, Body=key.encode())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, keys))
    return sorted(keys)


def test_list_2500_keys_in_pages_of_1000(s3, many_keys):
    pages = list(
        s3.get_paginator("list_objects_v2").paginate(
            Bucket="bucket", Prefix="many/", PaginationConfig={"PageSize": 1000}
        )
    )
    assert [page["KeyCount"] for page in pages] == [1000, 1000, 500]
    assert [page["IsTruncated"] for page in pages] == [True, True, False]
    listed = [item["Key"] for page in pages for item in page["Contents"]]
    assert listed == many_keys, "keys must come once each, in lexicographic order"
    sizes = {item["Key"]: item["Size"] for page in pages for item in page["Contents"]}
    assert all(sizes[key] == len(key) for key in many_keys)

    # ListObjects (V1) pages with markers too.
    v1_pages = list(
        s3.get_paginator("list_objects").paginate(
            Bucket="bucket", Prefix="many/", PaginationConfig={"PageSize": 1000}
        )
    )
    assert len(v1_pages) == 3
    assert [item["Key"] for page in v1_pages for item in page["Contents"]] == many_keys

    # start-after resumes strictly after the given key.
    after = s3.list_objects_v2(Bucket="bucket", Prefix="many/", StartAfter=many_keys[2497])
    assert [item["Key"] for item in after["Contents"]] == many_keys[2498:]


def test_list_with_delimiter(s3, many_keys):
    s3.put_object(Bucket="bucket", Key="many/top-level", Body=b"x")
    response = s3.list_objects_v2(Bucket="bucket", Prefix="many/", Delimiter="/")
    prefixes = [entry["Prefix"] for entry in response["CommonPrefixes"]]
    assert prefixes == [f"many/dir{index}/" for index in range(5)]
    assert [item["Key"] for item in response["Contents"]] == ["many/top-level"]

    inner = s3.list_objects_v2(Bucket="bucket", Prefix="many/dir3/", Delimiter="/", MaxKeys=10)
    assert inner["IsTruncated"] is True
    assert [item["Key"] for item in inner["Contents"]] == [
        key for key in many_keys if key.startswith("many/dir3/")
    ][:10]


def test_delete_objects(s3, many_keys):
    doomed = many_keys[:100]
    response = s3.delete_objects(
        Bucket="bucket", Delete={"Objects": [{"Key": key} for key in doomed]}
    )
    assert sorted(entry["Key"] for entry in response["Deleted"]) == doomed
    assert response.get("Errors", []) == []
    remaining = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bucket", Prefix="many/")
        for item in page["Contents"]
    ]
    assert remaining == many_keys[100:]
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket="bucket", Key=doomed[0])
    assert error_of(excinfo) == (404, "NoSuchKey")


def test_copy_object(s3, big_object):
    s3.put_object(Bucket="bucket", Key="source.txt", Body=b"copy me", ContentType="text/plain")
    s3.create_bucket(Bucket="other")
    s3.copy_object(
        Bucket="other", Key="copy.txt", CopySource={"Bucket": "bucket", "Key": "source.txt"}
    )
    copied = s3.get_object(Bucket="other", Key="copy.txt")
    assert copied["Body"].read() == b"copy me"
    assert copied["ContentType"] == "text/plain"

    s3.copy_object(Bucket="bucket", Key="big-copy.bin", CopySource="bucket/big.bin")
    body = s3.get_object(Bucket="bucket", Key="big-copy.bin")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(big_object).digest()


def test_conditional_put_and_get(s3):
    first = s3.put_object(Bucket="bucket", Key="commit.json", Body=b"one", IfNoneMatch="*")
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket="bucket", Key="commit.json", Body=b"two", IfNoneMatch="*")
    assert error_of(excinfo) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket="bucket", Key="commit.json")["Body"].read() == b"one"

    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket="bucket", Key="commit.json", Body=b"two", IfMatch='"0000"')
    assert error_of(excinfo) == (412, "PreconditionFailed")
    s3.put_object(Bucket="bucket", Key="commit.json", Body=b"three", IfMatch=first["ETag"])
    assert s3.get_object(Bucket="bucket", Key="commit.json")["Body"].read() == b"three"

    etag = s3.head_object(Bucket="bucket", Key="commit.json")["ETag"]
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket="bucket", Key="commit.json", IfNoneMatch=etag)
    assert error_of(excinfo)[0] == 304
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket="bucket", Key="commit.json", IfMatch='"0000"')
    assert error_of(excinfo) == (412, "PreconditionFailed")


def test_presigned_urls_read_with_plain_http(server, s3):
    data = random_bytes(3 * MIB + 17)
    s3.put_object(Bucket="bucket", Key="shared/data.bin", Body=data)

    sigv4_url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "bucket", "Key": "shared/data.bin"}, ExpiresIn=600
    )
    assert "X-Amz-Signature=" in sigv4_url
    response = requests.get(sigv4_url, timeout=60)
    assert response.status_code == 200
    assert response.content == data

    ranged = requests.get(sigv4_url, headers={"Range": "bytes=10-19"}, timeout=60)
    assert ranged.status_code == 206
    assert ranged.content == data[10:20]

    # boto3's default presign (no signature_version configured).
    default_client = server.s3_client(signature_version=None)
    default_url = default_client.generate_presigned_url(
        "get_object", Params={"Bucket": "bucket", "Key": "shared/data.bin"}, ExpiresIn=600
    )
    response = requests.get(default_url, timeout=60)
    assert response.status_code == 200
    assert response.content == data


def tamper_query(url: str, parameter: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    tampered = []
    for name, value in query:
        if name == parameter:
            value = value[:-2] + ("00" if not value.endswith("00") else "11")
        tampered.append((name, value))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(tampered)))


def test_tampered_presigned_urls_are_refused(server, s3):
    s3.put_object(Bucket="bucket", Key="secret.txt", Body=b"top secret")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "bucket", "Key": "secret.txt"}, ExpiresIn=600
    )
    for bad_url in (
        tamper_query(url, "X-Amz-Signature"),
        url.replace("secret.txt", "secret.tx"),
        tamper_query(url, "X-Amz-Expires"),
    ):
        response = requests.get(bad_url, timeout=30)
        assert response.status_code == 403, bad_url
        assert b"top secret" not in response.content

    default_url = server.s3_client(signature_version=None).generate_presigned_url(
        "get_object", Params={"Bucket": "bucket", "Key": "secret.txt"}, ExpiresIn=600
    )
    signature_name = "Signature" if "Signature=" in default_url else "X-Amz-Signature"
    response = requests.get(tamper_query(default_url, signature_name), timeout=30)
    assert response.status_code == 403
    assert b"top secret" not in response.content


def test_presigned_head_urls_answer_head_and_grant_no_get(server, s3):
    """Issue 14: a URL presigned for HEAD (boto3 `generate_presigned_url("head_object")`) was
    refused with 403, because every presigned HEAD was checked as a GET."""
    data = random_bytes(MIB + 3)
    s3.put_object(Bucket="bucket", Key="sized.bin", Body=data)
    for client in (s3, server.s3_client(signature_version=None)):
        head_url = client.generate_presigned_url(
            "head_object", Params={"Bucket": "bucket", "Key": "sized.bin"}, ExpiresIn=600
        )
        head = requests.head(head_url, timeout=30)
        assert head.status_code == 200, (head.status_code, head_url)
        assert int(head.headers["Content-Length"]) == len(data)
        assert head.headers["ETag"] == s3.head_object(Bucket="bucket", Key="sized.bin")["ETag"]
        # Signed for HEAD, it reads nothing.
        refused = requests.get(head_url, timeout=30)
        assert refused.status_code == 403
        assert data[:64] not in refused.content
        # A GET URL still answers HEAD (fsspec asks for the size first).
        get_url = client.generate_presigned_url(
            "get_object", Params={"Bucket": "bucket", "Key": "sized.bin"}, ExpiresIn=600
        )
        assert int(requests.head(get_url, timeout=30).headers["Content-Length"]) == len(data)
    tampered = tamper_query(s3.generate_presigned_url(
        "head_object", Params={"Bucket": "bucket", "Key": "sized.bin"}, ExpiresIn=600
    ), "X-Amz-Signature")
    assert requests.head(tampered, timeout=30).status_code == 403
