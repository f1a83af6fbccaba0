"""Issue 12: S3 behaviours that Spark's s3a, pyarrow and common tools need. Keys ending in `/`
(directory markers), virtual-host-style requests with `--domain`, and the probes tools send
to a bucket (versioning, tagging, lifecycle, policy, encryption), answered as MinIO answers an
unversioned bucket without those settings."""

from __future__ import annotations

import botocore.exceptions
import pytest

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def s3(server):
    client = server.s3_client()
    client.create_bucket(Bucket="bucket")
    return client


def keys_and_prefixes(s3, prefix: str = "", delimiter: str | None = None):
    options = {"Bucket": "bucket", "Prefix": prefix}
    if delimiter:
        options["Delimiter"] = delimiter
    listed = s3.list_objects_v2(**options)
    keys = [entry["Key"] for entry in listed.get("Contents", [])]
    prefixes = [entry["Prefix"] for entry in listed.get("CommonPrefixes", [])]
    return keys, prefixes


def test_directory_markers_with_boto3_both_orders(server, s3):
    s3.put_object(Bucket="bucket", Key="a/b", Body=b"under a")
    s3.put_object(Bucket="bucket", Key="a/", Body=b"")  # after the key under it
    s3.put_object(Bucket="bucket", Key="c/", Body=b"")  # before the key under it
    s3.put_object(Bucket="bucket", Key="c/d", Body=b"under c")
    s3.put_object(Bucket="bucket", Key="a", Body=b"plain a")
    assert s3.get_object(Bucket="bucket", Key="a/")["Body"].read() == b""
    assert s3.head_object(Bucket="bucket", Key="c/")["ContentLength"] == 0
    assert s3.get_object(Bucket="bucket", Key="a/b")["Body"].read() == b"under a"
    assert s3.get_object(Bucket="bucket", Key="a")["Body"].read() == b"plain a"

    assert keys_and_prefixes(s3) == (["a", "a/", "a/b", "c/", "c/d"], [])
    assert keys_and_prefixes(s3, delimiter="/") == (["a"], ["a/", "c/"])
    assert keys_and_prefixes(s3, "a/", "/") == (["a/", "a/b"], [])
    assert keys_and_prefixes(s3, "c/", "/") == (["c/", "c/d"], [])
    listed = s3.list_objects(Bucket="bucket", Prefix="a/", Delimiter="/")
    assert [entry["Key"] for entry in listed["Contents"]] == ["a/", "a/b"]

    s3.delete_object(Bucket="bucket", Key="a/")
    s3.delete_object(Bucket="bucket", Key="c/d")
    assert s3.get_object(Bucket="bucket", Key="a/b")["Body"].read() == b"under a"
    assert s3.get_object(Bucket="bucket", Key="c/")["Body"].read() == b""
    assert keys_and_prefixes(s3) == (["a", "a/b", "c/"], [])
    with pytest.raises(botocore.exceptions.ClientError) as missing:
        s3.head_object(Bucket="bucket", Key="a/")
    assert missing.value.response["Error"]["Code"] in ("404", "NoSuchKey")

    # Copy onto and from a marker; DeleteObjects of markers.
    s3.copy_object(Bucket="bucket", Key="e/", CopySource={"Bucket": "bucket", "Key": "c/"})
    assert keys_and_prefixes(s3, "e") == (["e/"], [])
    s3.delete_objects(Bucket="bucket", Delete={"Objects": [{"Key": "c/"}, {"Key": "e/"}]})
    assert keys_and_prefixes(s3) == (["a", "a/b"], [])


def test_reserved_marker_folder_name_is_refused(server, s3):
    for key in ["x/lakeshare.dir", "x/lakeshare.dir/", "a//"]:
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            s3.put_object(Bucket="bucket", Key=key, Body=b"v")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400, key
    assert keys_and_prefixes(s3) == ([], [])


def test_directory_markers_survive_heal_on_erasure_drives(lakeshare_server):
    from conftest import heal_report, wipe_drive

    server = lakeshare_server(drives=4, parity=2)
    s3 = server.s3_client()
    s3.create_bucket(Bucket="bucket")
    s3.put_object(Bucket="bucket", Key="t/_delta_log/", Body=b"")
    s3.put_object(Bucket="bucket", Key="t/_delta_log/0.json", Body=b"{}")
    s3.put_object(Bucket="bucket", Key="t/", Body=b"marker with bytes")
    server.stop()
    wipe_drive(server.drives[1])
    server.start()
    s3 = server.s3_client()
    report = heal_report(server.admin_heal("bucket"))
    assert report["objects_failed"] == 0, report
    assert (server.drives[1] / "bucket" / "t" / "lakeshare.dir" / "lakeshare.meta").is_file()
    assert (server.drives[1] / "bucket" / "t" / "_delta_log" / "lakeshare.dir").is_dir()
    assert s3.get_object(Bucket="bucket", Key="t/")["Body"].read() == b"marker with bytes"
    assert keys_and_prefixes(s3, "t/") == (["t/", "t/_delta_log/", "t/_delta_log/0.json"], [])


def test_pyarrow_create_dir_delete_file_and_move(server, s3):
    from pyarrow import fs

    filesystem = fs.S3FileSystem(
        access_key=server.access_key,
        secret_key=server.secret_key,
        endpoint_override=server.endpoint,
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=False,
    )
    filesystem.create_dir("bucket/folder/sub")
    info = filesystem.get_file_info("bucket/folder/sub")
    assert info.type == fs.FileType.Directory
    with filesystem.open_output_stream("bucket/folder/sub/file.txt") as out:
        out.write(b"kept bytes")
    # Deleting the only file keeps its folder (pyarrow writes the marker back first).
    filesystem.delete_file("bucket/folder/sub/file.txt")
    assert filesystem.get_file_info("bucket/folder/sub").type == fs.FileType.Directory

    with filesystem.open_output_stream("bucket/folder/one.txt") as out:
        out.write(b"moved bytes")
    filesystem.move("bucket/folder/one.txt", "bucket/other/two.txt")
    with filesystem.open_input_stream("bucket/other/two.txt") as source:
        assert source.read() == b"moved bytes"
    assert filesystem.get_file_info("bucket/folder/one.txt").type == fs.FileType.NotFound
    listed = filesystem.get_file_info(fs.FileSelector("bucket", recursive=True))
    files = sorted(entry.path for entry in listed if entry.type == fs.FileType.File)
    assert files == ["bucket/other/two.txt"]
    filesystem.delete_dir("bucket/folder")
    assert filesystem.get_file_info("bucket/folder").type == fs.FileType.NotFound
    keys, _ = keys_and_prefixes(s3)
    assert all(not key.startswith("folder/") for key in keys), keys


def test_virtual_host_style_with_domain(lakeshare_server, monkeypatch):
    server = lakeshare_server(extra_args=["--domain", "s3.lake.test"])
    path_style = server.s3_client()
    path_style.create_bucket(Bucket="vbucket")
    path_style.put_object(Bucket="vbucket", Key="dir/file.txt", Body=b"virtual")

    # The bucket comes from Host: vbucket.s3.lake.test:PORT (signed as sent).
    bucket_host = f"vbucket.s3.lake.test:{server.port}"
    response = signed_with_host(server, "GET", bucket_host, "/dir/file.txt")
    assert response.status == 200 and response.body == b"virtual", response
    listed = signed_with_host(
        server, "GET", f"vbucket.s3.lake.test:{server.port}", "/", "list-type=2"
    )
    assert listed.status == 200, listed
    assert b"<Key>dir/file.txt</Key>" in listed.body and b"ListBucketResult" in listed.body

    # boto3 with virtual addressing; names under the domain resolve to the node.
    import socket

    import boto3
    from botocore.config import Config

    resolve = socket.getaddrinfo

    def resolve_test_domain(host, *args, **kwargs):
        if isinstance(host, str) and (host == "s3.lake.test" or host.endswith(".s3.lake.test")):
            host = "127.0.0.1"
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve_test_domain)
    virtual = boto3.client(
        "s3",
        endpoint_url=f"http://s3.lake.test:{server.port}",
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=Config(region_name="us-east-1", s3={"addressing_style": "virtual"},
                      signature_version="s3v4"),
    )
    sent_hosts = []
    virtual.meta.events.register(
        "before-send.s3", lambda request, **_: sent_hosts.append(request.url.split("/")[2])
    )
    virtual.put_object(Bucket="vbucket", Key="v/put.txt", Body=b"put virtually")
    assert virtual.get_object(Bucket="vbucket", Key="v/put.txt")["Body"].read() == b"put virtually"
    keys = [o["Key"] for o in virtual.list_objects_v2(Bucket="vbucket")["Contents"]]
    assert keys == ["dir/file.txt", "v/put.txt"]
    assert set(sent_hosts) == {f"vbucket.s3.lake.test:{server.port}"}, sent_hosts

    # Path-style still works on the same node (IP host and the bare domain).
    by_path = path_style.get_object(Bucket="vbucket", Key="v/put.txt")["Body"].read()
    assert by_path == b"put virtually"
    bare = signed_with_host(server, "GET", f"s3.lake.test:{server.port}", "/vbucket/dir/file.txt")
    assert bare.status == 200 and bare.body == b"virtual", bare


def test_without_domain_bucket_hosts_are_path_style(server, s3):
    s3.put_object(Bucket="bucket", Key="k", Body=b"v")
    # Host bucket.localhost with no --domain: the path names bucket and key.
    response = signed_with_host(server, "GET", f"bucket.localhost:{server.port}", "/bucket/k")
    assert response.status == 200 and response.body == b"v", response


def signed_with_host(server, method: str, host: str, path: str, query: str = ""):
    """A SigV4-signed request for `http://HOST/PATH?QUERY`, sent to the node with that Host."""
    import http.client

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from conftest import SignedResponse

    target = path + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=f"http://{host}{target}", data=b"")
    S3SigV4Auth(Credentials(server.access_key, server.secret_key), "s3", "us-east-1").add_auth(
        request
    )
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host)
        for name, value in request.headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return SignedResponse(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def client_error(call):
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        call()
    error = raised.value.response
    return error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]


def test_bucket_probes_answer_as_minio_for_a_plain_bucket(server, s3):
    versioning = s3.get_bucket_versioning(Bucket="bucket")
    assert versioning["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert "Status" not in versioning and "MFADelete" not in versioning
    raw = server.signed_request("GET", "/bucket", query="versioning")
    assert raw.status == 200 and b"VersioningConfiguration" in raw.body, raw

    assert client_error(lambda: s3.get_bucket_tagging(Bucket="bucket")) == (404, "NoSuchTagSet")
    assert client_error(lambda: s3.get_bucket_lifecycle_configuration(Bucket="bucket")) == (
        404,
        "NoSuchLifecycleConfiguration",
    )
    assert client_error(lambda: s3.get_bucket_policy(Bucket="bucket")) == (
        404,
        "NoSuchBucketPolicy",
    )
    assert client_error(lambda: s3.get_bucket_encryption(Bucket="bucket")) == (
        404,
        "ServerSideEncryptionConfigurationNotFoundError",
    )
    s3.put_object(Bucket="bucket", Key="k", Body=b"v")
    tagging = s3.get_object_tagging(Bucket="bucket", Key="k")
    assert tagging["TagSet"] == []
    assert client_error(lambda: s3.get_object_tagging(Bucket="bucket", Key="nope"))[0] == 404

    # A missing bucket is NoSuchBucket for every probe.
    for probe in (s3.get_bucket_versioning, s3.get_bucket_tagging, s3.get_bucket_policy):
        assert client_error(lambda: probe(Bucket="missing")) == (404, "NoSuchBucket")
