"""Issue 13: file URLs of a sharing node over a remote store (Ceph RGW, a lakeshare storage node).

By default the URLs in answers name the sharing node: it checks its own signature and the
shared-object filter, then streams the file from the store with the range passed through and
HEAD answered, so recipients need no route to the store. With `--presign-direct URL` they are
presigned for the store itself. Tampered, foreign and unshared URLs are refused."""

from __future__ import annotations

import hashlib
import json
import urllib.parse
import uuid

import pytest
import requests

from test_remote_backend import StorageNodeAsStore, cli_for, rgw_options, sharing_node

pytestmark = pytest.mark.ceph


@pytest.fixture(params=["ceph-rgw", "lakeshare-node"])
def store(request, lakeshare_server):
    if request.param == "ceph-rgw":
        return request.getfixturevalue("ceph_rgw")
    return StorageNodeAsStore(lakeshare_server(drives=4, parity=2))


def write_wide_table(store, uri: str) -> None:
    """A table whose one data file is a few MiB (random strings do not compress)."""
    import numpy as np
    import pandas as pd
    from deltalake import write_deltalake

    rows = 60_000
    generator = np.random.default_rng(7)
    frame = pd.DataFrame({
        "id": np.arange(rows),
        "noise": [generator.bytes(48).hex() for _ in range(rows)],
    })
    write_deltalake(uri, frame, mode="overwrite", storage_options=rgw_options(store))


def shared_table(store, lakeshare_server, tmp_path, extra_args=()):
    suffix = uuid.uuid4().hex[:8]
    bucket, catalog = f"lake-{suffix}", f"catalog-{suffix}"
    s3 = store.s3_client()
    s3.create_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=catalog)
    write_wide_table(store, f"s3://{bucket}/wide")
    s3.put_object(Bucket=bucket, Key="private/secret.txt", Body=b"not shared")
    node = sharing_node(lakeshare_server, store, catalog)
    if extra_args:
        node.stop()
        node.extra_args += list(extra_args)
        node.start()
    cli = cli_for(tmp_path, "h", node)
    cli.run("table", "share", "create", "n/files", "s", f"wide:delta:{bucket}:wide/")
    token = cli.json("table", "share", "token", "create", "n/files")
    answer = requests.post(
        f"{node.endpoint}/_delta-sharing/v1/shares/files/schemas/s/tables/wide/query",
        headers={"Authorization": f"Bearer {token['profile']['bearerToken']}"},
        json={}, timeout=60)
    assert answer.status_code == 200, answer.text
    files = [json.loads(line)["file"] for line in answer.text.splitlines()[2:]]
    assert files, answer.text
    return node, cli, s3, bucket, files


def object_key(url: str) -> tuple[str, str]:
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    bucket, key = path.lstrip("/").split("/", 1)
    return bucket, key


def test_file_urls_name_the_node_and_stream_the_stores_exact_bytes(store, lakeshare_server,
                                                                   tmp_path):
    node, cli, s3, bucket, files = shared_table(store, lakeshare_server, tmp_path)
    for file in files:
        url = file["url"]
        assert url.startswith(node.endpoint + "/"), url
        url_bucket, key = object_key(url)
        assert url_bucket == bucket
        stored = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert len(stored) == file["size"] and len(stored) > 1 << 20, (len(stored), file["size"])

        whole = requests.get(url, timeout=60)
        assert whole.status_code == 200, whole.text[:300]
        assert int(whole.headers["Content-Length"]) == len(stored)
        assert hashlib.sha256(whole.content).digest() == hashlib.sha256(stored).digest()

        head = requests.head(url, timeout=60)
        assert head.status_code == 200, head.headers
        assert int(head.headers["Content-Length"]) == len(stored)
        assert head.content == b""
        etag = head.headers["ETag"]

        middle = requests.get(url, headers={"Range": "bytes=1000-300999"}, timeout=60)
        assert middle.status_code == 206, middle.text[:300]
        assert middle.headers["Content-Range"] == f"bytes 1000-300999/{len(stored)}"
        assert middle.content == stored[1000:301000]
        footer = requests.get(url, headers={"Range": "bytes=-8"}, timeout=60)
        assert footer.status_code == 206
        assert footer.content == stored[-8:] and footer.content.endswith(b"PAR1")
        tail = requests.get(url, headers={"Range": f"bytes={len(stored) - 10}-"}, timeout=60)
        assert tail.status_code == 206 and tail.content == stored[-10:]
        past = requests.get(url, headers={"Range": f"bytes={len(stored) + 5}-"}, timeout=60)
        assert past.status_code == 416, (past.status_code, past.text[:300])
        assert "<Code>InvalidRange</Code>" in past.text

        unchanged = requests.get(url, headers={"If-None-Match": etag}, timeout=60)
        assert unchanged.status_code == 304, unchanged.status_code
        refused = requests.get(url, headers={"If-Match": '"not-the-etag"'}, timeout=60)
        assert refused.status_code == 412, refused.status_code


def test_tampered_foreign_and_unshared_urls_are_refused(store, lakeshare_server, tmp_path):
    node, cli, s3, bucket, files = shared_table(store, lakeshare_server, tmp_path)
    url = files[0]["url"]
    assert requests.get(url, timeout=60).status_code == 200

    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    signature = query["X-Amz-Signature"][0]
    forged = url.replace(signature, ("0" if signature[0] != "0" else "1") + signature[1:])
    answer = requests.get(forged, timeout=60)
    assert answer.status_code == 403, answer.text
    assert "<Code>SignatureDoesNotMatch</Code>" in answer.text

    # The URL's signature moved to another object of the bucket.
    import boto3
    from botocore.config import Config
    signer_key = query["X-Amz-Credential"][0].split("/")[0]
    assert signer_key != store.access_key, "URLs must not carry the store's credential"
    other = parts._replace(path=f"/{bucket}/private/secret.txt").geturl()
    answer = requests.get(other, timeout=60)
    assert answer.status_code == 403, answer.text

    # The node's root credential reads through it too; the store's own credential is not the
    # node's (the node does not know it as a signer).
    root = boto3.client("s3", endpoint_url=node.endpoint, aws_access_key_id=node.access_key,
                        aws_secret_access_key=node.secret_key, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}))
    _, key = object_key(url)
    assert root.get_object(Bucket=bucket, Key=key)["ContentLength"] == files[0]["size"]
    if store.access_key != node.access_key:
        foreign = boto3.client("s3", endpoint_url=node.endpoint,
                               aws_access_key_id=store.access_key,
                               aws_secret_access_key=store.secret_key, region_name="us-east-1",
                               config=Config(s3={"addressing_style": "path"}))
        presigned = foreign.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=600)
        assert requests.get(presigned, timeout=60).status_code == 403

    # A removed share's URLs stop working on the node at once.
    cli.run("table", "share", "remove", "n/files")
    answer = requests.get(url, timeout=60)
    assert answer.status_code == 403, answer.text


def test_presign_direct_signs_urls_for_the_store(store, lakeshare_server, tmp_path):
    node, cli, s3, bucket, files = shared_table(
        store, lakeshare_server, tmp_path, extra_args=["--presign-direct", store.endpoint])
    for file in files:
        assert file["url"].startswith(store.endpoint + "/"), file["url"]
        _, key = object_key(file["url"])
        fetched = requests.get(file["url"], timeout=60)
        assert fetched.status_code == 200, fetched.text[:300]
        assert fetched.content == s3.get_object(Bucket=bucket, Key=key)["Body"].read()
