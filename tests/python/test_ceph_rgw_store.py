"""Issue 13 groundwork: the S3 behaviours of Ceph's RADOS Gateway that lakeshare's remote back end
will rely on, pinned against a real single-host cluster (`ceph_rgw` fixture, Debian's Ceph 16.2).

Covers: bucket create/list (and the names RGW refuses), PUT/GET/HEAD returning exact bytes and
the MD5 ETag, a 20 MiB multipart upload, Range GETs, ListObjectsV2 with prefix, delimiter and
continuation-token pages, put-if-absent with `If-None-Match: *` (also two threads racing on one
key), `If-Match` with the unquoted and the quoted ETag (also four writers racing from one ETag),
what RGW 16.2 does not guard (multipart completion, `If-None-Match` with an ETag), presigned GET
URLs used by `requests`, and DELETE. Tests whose docstring starts with "Records" pin a quirk of
RGW 16.2 that the remote back end must work around; they fail when the quirk goes away.
Conditional headers go out on raw SigV4-signed requests so that the exact header text is what
RGW sees (RGW treats a quoted and an unquoted ETag differently).

No lakeshare node is started here, so the module is marked `ceph`: `./test.sh` runs it once,
outside the loop over the drive I/O back-ends.
"""

from __future__ import annotations

import hashlib
import threading
import uuid

import botocore.exceptions
import pytest
import requests

from conftest import random_bytes, s3_error_code

pytestmark = [pytest.mark.ceph, pytest.mark.timeout(600)]

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def s3(ceph_rgw):
    return ceph_rgw.s3_client()


@pytest.fixture
def bucket(s3):
    """A fresh bucket per test, emptied and removed afterwards."""
    name = f"lakeshare-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        for entry in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=entry["Key"])
    s3.delete_bucket(Bucket=name)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def error_code(error: botocore.exceptions.ClientError) -> str:
    return error.response["Error"]["Code"]


def client_error(call, *args, **kwargs) -> botocore.exceptions.ClientError:
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        call(*args, **kwargs)
    return raised.value


def stored_body(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def current_etag(s3, bucket: str, key: str) -> str:
    """The ETag HEAD returns, as sent: with its double quotes."""
    return s3.head_object(Bucket=bucket, Key=key)["ETag"]


def put(ceph_rgw, bucket: str, key: str, body: bytes, **headers: str):
    """A raw signed PUT with exactly these headers (`If_None_Match="*"` -> `If-None-Match: *`)."""
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    return ceph_rgw.signed_request("PUT", f"/{bucket}/{key}", body=body, headers=named)


def describe(response) -> str:
    return f"{response.status_code} {s3_error_code(response.content)} {response.content[:300]!r}"


# -- buckets -----------------------------------------------------------------------------------


def test_bucket_create_list_and_refused_names(s3, bucket):
    names = [entry["Name"] for entry in s3.list_buckets()["Buckets"]]
    assert bucket in names, f"ListBuckets does not show the new bucket {bucket}: {names}"
    assert s3.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200

    error = client_error(s3.head_bucket, Bucket=f"missing-{uuid.uuid4().hex[:8]}")
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 404, error.response

    # RGW refuses names under 3 characters, as S3 does; the catalog bucket must be longer.
    error = client_error(s3.create_bucket, Bucket="b1")
    assert error_code(error) == "InvalidBucketName", error.response

    # Creating a bucket you already own: RGW answers 200 (S3 us-east-1 does too), not 409.
    again = s3.create_bucket(Bucket=bucket)
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 200, again


# -- objects -----------------------------------------------------------------------------------


def test_put_get_head_exact_bytes_and_md5_etag(s3, bucket):
    objects = {
        "table/_delta_log/00000000000000000000.json": random_bytes(3 * MIB + 17),
        "table/part-00000 with spaces é.parquet": random_bytes(4096),
        "empty": b"",
        "dir-marker/": b"",
    }
    for key, body in objects.items():
        put_answer = s3.put_object(Bucket=bucket, Key=key, Body=body)
        assert put_answer["ETag"] == f'"{md5_hex(body)}"', (key, put_answer["ETag"])
    for key, body in objects.items():
        got = stored_body(s3, bucket, key)
        assert got == body, f"{key}: GET gave {len(got)} bytes, PUT sent {len(body)} (or different)"
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ContentLength"] == len(body), (key, head)
        assert head["ETag"] == f'"{md5_hex(body)}"', (key, head["ETag"])
        assert head["LastModified"] is not None

    error = client_error(s3.get_object, Bucket=bucket, Key="table/missing")
    assert error_code(error) == "NoSuchKey", error.response
    error = client_error(s3.head_object, Bucket=bucket, Key="table/missing")
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 404, error.response


def test_overwrite_is_seen_by_head_etag(s3, bucket):
    """A remote node learns that a small object changed from its HEAD ETag."""
    s3.put_object(Bucket=bucket, Key="catalog.json", Body=b'{"version": 1}')
    first = current_etag(s3, bucket, "catalog.json")
    s3.put_object(Bucket=bucket, Key="catalog.json", Body=b'{"version": 2}')
    second = current_etag(s3, bucket, "catalog.json")
    assert first != second, "the ETag did not change when the object was overwritten"
    assert stored_body(s3, bucket, "catalog.json") == b'{"version": 2}'


def test_multipart_upload_20_mib_exact_bytes(s3, bucket):
    body = random_bytes(20 * MIB)
    part_size = 6 * MIB  # parts of 6, 6, 6 and 2 MiB: all but the last over S3's 5 MiB minimum
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big.parquet")
    parts = []
    for number, offset in enumerate(range(0, len(body), part_size), start=1):
        chunk = body[offset : offset + part_size]
        answer = s3.upload_part(
            Bucket=bucket,
            Key="big.parquet",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=chunk,
        )
        assert answer["ETag"] == f'"{md5_hex(chunk)}"', (number, answer["ETag"])
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="big.parquet",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": parts},
    )
    head = s3.head_object(Bucket=bucket, Key="big.parquet")
    assert head["ContentLength"] == len(body), head
    # The standard multipart ETag: MD5 of the parts' binary MD5s, then "-<part count>".
    part_digests = b"".join(bytes.fromhex(part["ETag"].strip('"')) for part in parts)
    assert head["ETag"] == f'"{md5_hex(part_digests)}-{len(parts)}"', head["ETag"]
    # RGW 16.2 answers CompleteMultipartUpload with an empty `<ETag></ETag>`: a writer that
    # needs the new ETag (for a later If-Match) must take it from a HEAD, not from this answer.
    assert done.get("ETag", "") in ("", head["ETag"]), done
    got = stored_body(s3, bucket, "big.parquet")
    assert len(got) == len(body), f"GET gave {len(got)} bytes of {len(body)}"
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(body).hexdigest(), "bytes differ"
    listed = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert listed == [], f"the completed upload is still listed: {listed}"


def test_range_get(s3, bucket):
    body = random_bytes(1 * MIB)
    s3.put_object(Bucket=bucket, Key="ranged", Body=body)
    cases = {
        "bytes=0-0": (body[:1], "bytes 0-0/1048576"),
        "bytes=100-199": (body[100:200], "bytes 100-199/1048576"),
        "bytes=-50": (body[-50:], "bytes 1048526-1048575/1048576"),
        "bytes=1048000-": (body[1048000:], "bytes 1048000-1048575/1048576"),
        "bytes=1048000-9999999": (body[1048000:], "bytes 1048000-1048575/1048576"),
    }
    for header, (expected, content_range) in cases.items():
        answer = s3.get_object(Bucket=bucket, Key="ranged", Range=header)
        status = answer["ResponseMetadata"]["HTTPStatusCode"]
        assert status == 206, f"{header}: status {status}"
        assert answer["ContentRange"] == content_range, (header, answer["ContentRange"])
        got = answer["Body"].read()
        assert got == expected, f"{header}: {len(got)} bytes, wrong content or length"

    error = client_error(s3.get_object, Bucket=bucket, Key="ranged", Range="bytes=2000000-")
    assert error_code(error) == "InvalidRange", error.response
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 416


# -- listing -----------------------------------------------------------------------------------


def list_all(s3, **options) -> tuple[list[str], list[str], int]:
    """Keys and common prefixes over every ListObjectsV2 page, and the number of pages."""
    keys, prefixes, pages, token = [], [], 0, None
    while True:
        page = s3.list_objects_v2(**options, **({"ContinuationToken": token} if token else {}))
        pages += 1
        keys += [entry["Key"] for entry in page.get("Contents", [])]
        prefixes += [entry["Prefix"] for entry in page.get("CommonPrefixes", [])]
        if not page["IsTruncated"]:
            assert "NextContinuationToken" not in page, page
            return keys, prefixes, pages
        token = page["NextContinuationToken"]
        assert token, f"a truncated page without NextContinuationToken: {page}"
        assert pages < 100, "pagination does not end"


def test_list_objects_v2_prefix_delimiter_and_pages(s3, bucket):
    log = [f"t/_delta_log/{version:020d}.json" for version in range(20)]
    data = [f"t/year={year}/part-{index}.parquet" for year in (2024, 2025) for index in range(6)]
    other = ["t2/_delta_log/00000000000000000000.json", "t/_last_checkpoint", "u/x"]
    every = log + data + other  # 35 keys
    for key in every:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())

    keys, prefixes, pages = list_all(s3, Bucket=bucket, MaxKeys=10)
    assert keys == sorted(every), "a paged full listing is not every key once, in order"
    assert prefixes == []
    assert pages == 4, f"35 keys at MaxKeys=10 took {pages} pages"

    keys, _, pages = list_all(s3, Bucket=bucket, Prefix="t/_delta_log/", MaxKeys=10)
    assert keys == log, keys
    assert pages == 2, f"20 keys at MaxKeys=10 took {pages} pages"

    # `t/` is a prefix of `t2/...` as a string but not as a folder: only `t/` keys.
    keys, prefixes, _ = list_all(s3, Bucket=bucket, Prefix="t/", Delimiter="/")
    assert keys == ["t/_last_checkpoint"], keys
    assert prefixes == ["t/_delta_log/", "t/year=2024/", "t/year=2025/"], prefixes

    keys, prefixes, _ = list_all(s3, Bucket=bucket, Delimiter="/")
    assert keys == [] and prefixes == ["t/", "t2/", "u/"], (keys, prefixes)

    # StartAfter: what a node uses to list the commits after the version it has.
    page = s3.list_objects_v2(Bucket=bucket, Prefix="t/_delta_log/", StartAfter=log[16])
    assert [entry["Key"] for entry in page["Contents"]] == log[17:], page.get("Contents")
    assert page["KeyCount"] == 3, page

    page = s3.list_objects_v2(Bucket=bucket, Prefix="nothing/")
    assert page["KeyCount"] == 0 and "Contents" not in page, page


# -- conditional writes ------------------------------------------------------------------------


def test_put_if_absent_first_wins_second_412(ceph_rgw, s3, bucket):
    first = put(ceph_rgw, bucket, "log/00001.json", b"first", If_None_Match="*")
    assert first.status_code == 200, f"put-if-absent on a new key: {describe(first)}"
    second = put(ceph_rgw, bucket, "log/00001.json", b"second", If_None_Match="*")
    assert second.status_code == 412, f"put-if-absent on an existing key: {describe(second)}"
    assert s3_error_code(second.content) == "PreconditionFailed", describe(second)
    assert stored_body(s3, bucket, "log/00001.json") == b"first", "the refused PUT overwrote"


def test_put_if_absent_through_boto3_parameter(s3, bucket):
    """botocore's `IfNoneMatch` parameter sends the same header: what a boto3 writer sees."""
    s3.put_object(Bucket=bucket, Key="once", Body=b"one", IfNoneMatch="*")
    error = client_error(s3.put_object, Bucket=bucket, Key="once", Body=b"two", IfNoneMatch="*")
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 412, error.response
    assert error_code(error) == "PreconditionFailed", error.response
    assert stored_body(s3, bucket, "once") == b"one"


def test_put_if_absent_two_racing_threads_exactly_one_wins(ceph_rgw, s3, bucket):
    rounds = 20
    for round_index in range(rounds):
        key = f"race/{round_index:05d}.json"
        barrier = threading.Barrier(2)
        answers: dict[str, requests.Response] = {}

        def racer(name: str) -> None:
            barrier.wait(10)
            answers[name] = put(ceph_rgw, bucket, key, name.encode(), If_None_Match="*")

        threads = [threading.Thread(target=racer, args=(name,)) for name in ("alpha", "beta")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        statuses = {name: answer.status_code for name, answer in answers.items()}
        assert sorted(statuses.values()) == [200, 412], (
            f"round {round_index}: two put-if-absent on one key must give one 200 and one 412, "
            f"got {statuses}: " + "; ".join(describe(answer) for answer in answers.values())
        )
        winner = next(name for name, status in statuses.items() if status == 200)
        assert stored_body(s3, bucket, key) == winner.encode(), (
            f"round {round_index}: {winner} got 200 but the other body is stored"
        )


def test_if_match_unquoted_etag_is_compare_and_swap(ceph_rgw, s3, bucket):
    s3.put_object(Bucket=bucket, Key="catalog.json", Body=b"v1")
    etag_v1 = current_etag(s3, bucket, "catalog.json").strip('"')

    swapped = put(ceph_rgw, bucket, "catalog.json", b"v2", If_Match=etag_v1)
    assert swapped.status_code == 200, f"If-Match, current unquoted ETag: {describe(swapped)}"
    assert stored_body(s3, bucket, "catalog.json") == b"v2"

    stale = put(ceph_rgw, bucket, "catalog.json", b"v3 from a stale reader", If_Match=etag_v1)
    assert stale.status_code == 412, f"If-Match with a stale unquoted ETag: {describe(stale)}"
    assert s3_error_code(stale.content) == "PreconditionFailed", describe(stale)
    assert stored_body(s3, bucket, "catalog.json") == b"v2", "the stale If-Match PUT overwrote"


def test_if_match_quoted_etag_is_refused_by_rgw_16(ceph_rgw, s3, bucket):
    """Records RGW 16.2's behaviour: the standard quoted ETag never matches (412 even when it is
    the current one). If this starts to fail with 200, RGW has been fixed and the catalog's
    compare-and-swap may send the quoted form; until then it must send it unquoted."""
    s3.put_object(Bucket=bucket, Key="catalog.json", Body=b"v1")
    quoted = current_etag(s3, bucket, "catalog.json")
    assert quoted.startswith('"') and quoted.endswith('"'), quoted

    answer = put(ceph_rgw, bucket, "catalog.json", b"v2", If_Match=quoted)
    assert answer.status_code == 412, f"If-Match with the current quoted ETag: {describe(answer)}"
    assert stored_body(s3, bucket, "catalog.json") == b"v1"

    # boto3's `IfMatch` parameter sends the header text as given: same outcome.
    error = client_error(
        s3.put_object, Bucket=bucket, Key="catalog.json", Body=b"v2", IfMatch=quoted
    )
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 412, error.response
    s3.put_object(Bucket=bucket, Key="catalog.json", Body=b"v2", IfMatch=quoted.strip('"'))
    assert stored_body(s3, bucket, "catalog.json") == b"v2"


def test_if_match_on_a_missing_key_and_if_match_star(ceph_rgw, s3, bucket):
    """A compare-and-swap against an object that was deleted must not create it."""
    answer = put(ceph_rgw, bucket, "gone.json", b"v1", If_Match="0123456789abcdef0123456789abcdef")
    assert answer.status_code == 412, f"If-Match on a missing key: {describe(answer)}"
    answer = put(ceph_rgw, bucket, "gone.json", b"v1", If_Match="*")
    assert answer.status_code == 412, f"If-Match: * on a missing key: {describe(answer)}"
    error = client_error(s3.head_object, Bucket=bucket, Key="gone.json")
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 404, "a refused PUT created it"

    s3.put_object(Bucket=bucket, Key="there.json", Body=b"v1")
    answer = put(ceph_rgw, bucket, "there.json", b"v2", If_Match="*")
    assert answer.status_code == 200, f"If-Match: * on an existing key: {describe(answer)}"
    assert stored_body(s3, bucket, "there.json") == b"v2"


def test_if_match_racing_writers_one_wins_losers_412_or_500(ceph_rgw, s3, bucket):
    """Four writers compare-and-swap from the same ETag: exactly one 200 and its body stored.

    RGW 16.2 refuses the losers with 412 PreconditionFailed *or* 500 UnknownError (a loser
    that got past the ETag check and lost the RADOS-level race); both mean "not applied", but a
    client cannot tell a 500 from a store fault, so the catalog must re-read (HEAD/GET) after a
    500 on a conditional write instead of retrying blindly."""
    writers = 4
    for round_index in range(10):
        key = f"cas/{round_index:05d}.json"
        s3.put_object(Bucket=bucket, Key=key, Body=b"base")
        etag = current_etag(s3, bucket, key).strip('"')
        barrier = threading.Barrier(writers)
        answers: dict[int, requests.Response] = {}

        def writer(index: int) -> None:
            barrier.wait(10)
            answers[index] = put(ceph_rgw, bucket, key, f"writer {index}".encode(), If_Match=etag)

        threads = [threading.Thread(target=writer, args=(index,)) for index in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        statuses = {index: answer.status_code for index, answer in answers.items()}
        winners = [index for index, status in statuses.items() if status == 200]
        assert len(winners) == 1, f"round {round_index}: {statuses} (one 200 expected)"
        for index, answer in answers.items():
            if index in winners:
                continue
            expected = {412: "PreconditionFailed", 500: "UnknownError"}
            assert expected.get(answer.status_code) == s3_error_code(answer.content), (
                f"round {round_index}: a losing writer got {describe(answer)}"
            )
        assert stored_body(s3, bucket, key) == f"writer {winners[0]}".encode(), (
            f"round {round_index}: writer {winners[0]} got 200 but another body is stored"
        )


def test_if_none_match_does_not_guard_multipart_complete(s3, bucket):
    """Records RGW 16.2: CompleteMultipartUpload ignores `If-None-Match: *` and replaces an
    existing key (AWS S3 answers 412). Put-if-absent is only safe with a single PUT: catalog
    and commit entries must stay under the multipart threshold. Fails with 412 once fixed."""
    s3.put_object(Bucket=bucket, Key="log/00001.json", Body=b"first")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="log/00001.json")
    part = s3.upload_part(
        Bucket=bucket, Key="log/00001.json", UploadId=upload["UploadId"], PartNumber=1, Body=b"mp"
    )
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="log/00001.json",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        IfNoneMatch="*",
    )
    assert stored_body(s3, bucket, "log/00001.json") == b"mp", "the multipart complete was refused"


def test_if_none_match_with_an_etag_is_ignored_on_put(ceph_rgw, s3, bucket):
    """Records RGW 16.2: on PUT only `If-None-Match: *` is a condition; an ETag value there is
    ignored (the PUT overwrites even when it matches). Never use it as a guard."""
    s3.put_object(Bucket=bucket, Key="k", Body=b"v1")
    quoted = current_etag(s3, bucket, "k")
    for value in (quoted, quoted.strip('"')):
        answer = put(ceph_rgw, bucket, "k", value.encode(), If_None_Match=value)
        assert answer.status_code == 200, f"If-None-Match: {value}: {describe(answer)}"
        assert stored_body(s3, bucket, "k") == value.encode()


# -- presigned URLs and DELETE -----------------------------------------------------------------


def test_presigned_get_url_works_with_requests(s3, bucket):
    body = random_bytes(256 * 1024)
    s3.put_object(Bucket=bucket, Key="dir/file name.parquet", Body=body)
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "dir/file name.parquet"}, ExpiresIn=300
    )
    got = requests.get(url, timeout=30)
    assert got.status_code == 200, (got.status_code, got.content[:300])
    assert got.content == body, "presigned GET gave different bytes"

    ranged = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == body[10:20], ranged.status_code

    head_url = s3.generate_presigned_url(
        "head_object", Params={"Bucket": bucket, "Key": "dir/file name.parquet"}, ExpiresIn=300
    )
    head = requests.head(head_url, timeout=30)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(body)

    tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    refused = requests.get(tampered, timeout=30)
    assert refused.status_code == 403, f"a tampered signature was accepted: {refused.status_code}"


def test_delete_objects_and_buckets(s3, bucket):
    for key in ("a", "b", "c/d"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())

    deleted = s3.delete_object(Bucket=bucket, Key="a")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204, deleted
    error = client_error(s3.get_object, Bucket=bucket, Key="a")
    assert error_code(error) == "NoSuchKey", error.response
    again = s3.delete_object(Bucket=bucket, Key="a")
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 204, "deleting a missing key must be 204"

    batch = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "b"}, {"Key": "c/d"}, {"Key": "never"}]}
    )
    deleted_keys = sorted(entry["Key"] for entry in batch.get("Deleted", []))
    assert deleted_keys == ["b", "c/d", "never"], batch
    assert batch.get("Errors", []) == [], batch
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0

    s3.put_object(Bucket=bucket, Key="keep", Body=b"x")
    error = client_error(s3.delete_bucket, Bucket=bucket)
    assert error_code(error) == "BucketNotEmpty", error.response
