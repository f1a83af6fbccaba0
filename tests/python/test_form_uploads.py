"""Browser-form uploads (S3 POST Object) with boto3's `generate_presigned_post` and
`requests`: the policy's conditions, its signature and expiry, the size range, the success
answers, and that nothing is stored when the form is refused."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ElementTree

import pytest
import requests
from botocore.exceptions import ClientError
from conftest import random_bytes, s3_error_code

pytestmark = pytest.mark.timeout(120)

BUCKET = "forms"


@pytest.fixture
def s3(server):
    client = server.s3_client(max_attempts=1)
    client.create_bucket(Bucket=BUCKET)
    return client


def post(url: str, fields: dict, body: bytes, filename: str = "upload.bin") -> requests.Response:
    return requests.post(url, data=fields, files={"file": (filename, body)}, timeout=60)


def assert_absent(s3, key: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=BUCKET, Key=key)
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_presigned_post_stores_the_file_with_its_fields(s3):
    body = random_bytes(300_000)
    form = s3.generate_presigned_post(
        BUCKET,
        "up/${filename}",
        Fields={"Content-Type": "text/csv", "x-amz-meta-origin": "form", "success_action_status": "201"},
        Conditions=[
            ["starts-with", "$key", "up/"],
            {"Content-Type": "text/csv"},
            {"x-amz-meta-origin": "form"},
            {"success_action_status": "201"},
        ],
        ExpiresIn=300,
    )
    response = post(form["url"], form["fields"], body, filename="table.csv")
    assert response.status_code == 201, response.text
    answer = ElementTree.fromstring(response.content)
    assert answer.tag == "PostResponse"
    assert answer.findtext("Key") == "up/table.csv"
    assert answer.findtext("Bucket") == BUCKET
    head = s3.head_object(Bucket=BUCKET, Key="up/table.csv")
    assert head["ContentType"] == "text/csv"
    assert head["Metadata"] == {"origin": "form"}
    assert head["ETag"] == response.headers["ETag"] == answer.findtext("ETag")
    assert s3.get_object(Bucket=BUCKET, Key="up/table.csv")["Body"].read() == body


def test_default_answer_is_204_and_200_when_asked(s3):
    form = s3.generate_presigned_post(BUCKET, "plain", ExpiresIn=300)
    response = post(form["url"], form["fields"], b"abc")
    assert response.status_code == 204, response.text
    form = s3.generate_presigned_post(
        BUCKET,
        "plain-200",
        Fields={"success_action_status": "200"},
        Conditions=[{"success_action_status": "200"}],
        ExpiresIn=300,
    )
    assert post(form["url"], form["fields"], b"abc").status_code == 200
    assert s3.get_object(Bucket=BUCKET, Key="plain-200")["Body"].read() == b"abc"


def test_a_tampered_signature_or_policy_is_refused(s3):
    form = s3.generate_presigned_post(BUCKET, "signed", ExpiresIn=300)
    fields = dict(form["fields"])
    fields["x-amz-signature"] = "0" * 64
    response = post(form["url"], fields, b"x")
    assert response.status_code == 403
    assert s3_error_code(response.content) == "SignatureDoesNotMatch"

    policy = json.loads(base64.b64decode(form["fields"]["policy"]))
    policy["conditions"] = [c for c in policy["conditions"] if not (isinstance(c, dict) and "key" in c)]
    fields = dict(form["fields"])
    fields["policy"] = base64.b64encode(json.dumps(policy).encode()).decode()
    response = post(form["url"], fields, b"x")
    assert response.status_code == 403
    assert s3_error_code(response.content) == "SignatureDoesNotMatch"
    assert_absent(s3, "signed")


def test_a_field_outside_the_policy_is_refused(s3):
    form = s3.generate_presigned_post(BUCKET, "fixed-key", ExpiresIn=300)
    fields = dict(form["fields"])
    fields["key"] = "another-key"
    response = post(form["url"], fields, b"x")
    assert response.status_code == 403
    assert s3_error_code(response.content) == "AccessDenied"
    assert "Policy Condition failed" in response.text
    fields = dict(form["fields"])
    fields["x-amz-meta-sneaky"] = "1"
    response = post(form["url"], fields, b"x")
    assert response.status_code == 403
    assert "Extra input fields" in response.text
    assert_absent(s3, "another-key")
    assert_absent(s3, "fixed-key")


def test_the_content_length_range_bounds_the_file(s3):
    form = s3.generate_presigned_post(
        BUCKET, "sized", Conditions=[["content-length-range", 10, 100_000]], ExpiresIn=300
    )
    response = post(form["url"], form["fields"], random_bytes(100_001))
    assert response.status_code == 400
    assert s3_error_code(response.content) == "EntityTooLarge"
    response = post(form["url"], form["fields"], b"short")
    assert response.status_code == 400
    assert s3_error_code(response.content) == "EntityTooSmall"
    assert_absent(s3, "sized")
    body = random_bytes(100_000)
    assert post(form["url"], form["fields"], body).status_code == 204
    assert s3.get_object(Bucket=BUCKET, Key="sized")["Body"].read() == body


def test_an_expired_policy_and_an_unknown_key_are_refused(s3, server):
    form = s3.generate_presigned_post(BUCKET, "late", ExpiresIn=-10)
    response = post(form["url"], form["fields"], b"x")
    assert response.status_code == 403
    assert "expired" in response.text
    import boto3
    from botocore.config import Config

    stranger = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id="NOBODY",
        aws_secret_access_key="nobody-secret",
        region_name="us-east-1",
        config=Config(signature_version="s3v4"),
    )
    form = stranger.generate_presigned_post(BUCKET, "late", ExpiresIn=300)
    response = post(form["url"], form["fields"], b"x")
    assert response.status_code == 403
    assert s3_error_code(response.content) == "InvalidAccessKeyId"
    assert_absent(s3, "late")


def test_forms_without_a_file_or_key_or_to_a_missing_bucket(s3, server):
    form = s3.generate_presigned_post(BUCKET, "nofile", ExpiresIn=300)
    response = requests.post(form["url"], files={name: (None, value) for name, value in form["fields"].items()}, timeout=60)
    assert response.status_code == 400
    assert "exactly one file" in response.text
    form = s3.generate_presigned_post("no-such-bucket", "k", ExpiresIn=300)
    response = post(form["url"], form["fields"], b"x")
    assert response.status_code == 404
    assert s3_error_code(response.content) == "NoSuchBucket"
    response = requests.post(
        f"{server.endpoint}/{BUCKET}",
        data=b"--b\r\nbroken",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
        timeout=60,
    )
    assert response.status_code in (400, 403)
    assert s3_error_code(response.content) in ("MalformedPOSTRequest", "AccessDenied")


def test_a_signature_version_2_form_is_checked_too(s3, server):
    """boto3's `generate_presigned_post` on a client without `signature_version` signs the
    policy with SigV2 (`AWSAccessKeyId`, `signature`); such forms are verified the same way."""
    import boto3

    v2 = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
    )
    form = v2.generate_presigned_post(BUCKET, "v2-key", ExpiresIn=300)
    if "signature" not in form["fields"]:
        pytest.fail(f"this boto3 signs POST policies with {sorted(form['fields'])}, not SigV2")
    response = post(form["url"], form["fields"], b"v2 body")
    assert response.status_code == 204, response.text
    assert s3.get_object(Bucket=BUCKET, Key="v2-key")["Body"].read() == b"v2 body"
    fields = dict(form["fields"], signature=base64.b64encode(b"\0" * 20).decode())
    response = post(form["url"], fields, b"other")
    assert response.status_code == 403
    assert s3_error_code(response.content) == "SignatureDoesNotMatch"
    assert s3.get_object(Bucket=BUCKET, Key="v2-key")["Body"].read() == b"v2 body"
