"""Issue 3: shares and tokens through the CLI and the admin API, profiles, and the discovery
half of Delta Sharing read by the real `delta-sharing` Python client."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import server_binary

SHARING = "/_delta-sharing/v1"


class Cli:
    """Runs `lakeshare` CLI commands with a private HOME (alias config lives there)."""

    def __init__(self, home: Path):
        self.home = home

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env["HOME"] = str(self.home)
        result = subprocess.run(
            [str(server_binary()), *args], capture_output=True, text=True, env=env, timeout=120
        )
        if check:
            assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
        return result

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args, "--json").stdout)


@pytest.fixture
def node(lakeshare_server, tmp_path):
    server = lakeshare_server(drives=1)
    cli = Cli(tmp_path / "home")
    cli.home.mkdir()
    cli.run("alias", "set", "local", server.endpoint, server.access_key, server.secret_key)
    return server, cli


def bearer_get(server, token: str, path: str, **params) -> requests.Response:
    return requests.get(
        f"{server.endpoint}{SHARING}{path}",
        headers={"Authorization": f"Bearer {token}"},
        params=params,
        timeout=30,
    )


def write_employees(server) -> None:
    import pandas as pd
    from deltalake import write_deltalake

    client = server.minio_client()
    if not client.bucket_exists("analytics"):
        client.make_bucket("analytics")
    data = {
        "id": [1, 2, 3, 4, 5],
        "name": ["Alice", "Bob", "Carol", "David", "Eve"],
        "department": ["Engineering", "Sales", "Engineering", "Marketing", "Sales"],
        "salary": [95000, 65000, 110000, 72000, 68000],
    }
    write_deltalake(
        "s3://analytics/employees/",
        pd.DataFrame(data),
        mode="overwrite",
        storage_options=server.storage_options(),
    )


def write_delta_logs(server, bucket: str, *locations: str) -> None:
    """A one-commit Delta log (an empty table) at each location: shares check for one."""
    schema = {"type": "struct", "fields": [
        {"name": "n", "type": "long", "nullable": True, "metadata": {}}]}
    commit = "\n".join(json.dumps(action) for action in (
        {"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}},
        {"metaData": {"id": "5e1f0c2a-0000-4000-8000-000000000001",
                      "format": {"provider": "parquet", "options": {}},
                      "schemaString": json.dumps(schema), "partitionColumns": [],
                      "configuration": {}, "createdTime": 1700000000000}},
    )).encode()
    s3 = server.s3_client()
    for location in locations:
        s3.put_object(Bucket=bucket, Key=f"{location}_delta_log/00000000000000000000.json",
                      Body=commit)


def test_alias_config_is_private(node):
    server, cli = node
    config = cli.home / ".lakeshare" / "config.json"
    assert config.stat().st_mode & 0o777 == 0o600
    listed = cli.json("alias", "list")
    assert any(alias["name"] == "local" for alias in listed["aliases"]), listed
    assert server.secret_key not in cli.run("alias", "list").stdout


def test_quickstart_steps_2_to_4(node, tmp_path):
    """The product brief's steps 2 and 3 with this CLI, then step 4 up to list_all_tables."""
    import delta_sharing

    server, cli = node
    write_employees(server)
    cli.run(
        "table", "share", "create", "local/analytics-share", "HR",
        "employees:delta:analytics:employees/",
        "--description", "Analytics for current employees",
    )
    created = cli.json(
        "table", "share", "token", "create", "local/analytics-share",
        "--expires", "90d", "--description", "Access to analytics share for HR-associated tables",
    )
    for field in ("tokenId", "token", "expiresAt", "profile"):
        assert field in created, created
    assert created["token"].startswith("dstkn_")
    profile = created["profile"]
    assert profile["shareCredentialsVersion"] == 1
    assert profile["bearerToken"] == created["token"]
    assert profile["endpoint"] == f"{server.endpoint}{SHARING}"
    assert "expirationTime" in profile
    # `... --json | jq -r '.profile' > profile.share`
    profile_path = tmp_path / "profile.share"
    profile_path.write_text(json.dumps(profile))

    client = delta_sharing.SharingClient(str(profile_path))
    assert [share.name for share in client.list_shares()] == ["analytics-share"]
    tables = client.list_all_tables()
    assert [(t.share, t.schema, t.name) for t in tables] == [("analytics-share", "HR", "employees")]


def test_pagination_over_1200_tables(node):
    server, cli = node
    server.s3_client().create_bucket(Bucket="lake")
    write_delta_logs(server, "lake", "one/")
    schemas = [
        {
            "name": f"schema{s:02d}",
            "tables": [
                {"name": f"t{t:02d}", "sourceType": "delta", "bucket": "lake",
                 "location": "one/"}
                for t in range(30)
            ],
        }
        for s in range(40)
    ]
    response = server.signed_request(
        "POST", "/minio/admin/v4/delta-sharing/shares",
        body=json.dumps({"name": "big", "schemas": schemas}).encode(),
    )
    assert response.status == 200, response
    token = cli.json("table", "share", "token", "create", "local/big")["token"]
    expected = sorted((f"schema{s:02d}", f"t{t:02d}") for s in range(40) for t in range(30))
    for max_results in (1, 7, 500):
        seen, page_token, pages = [], None, 0
        while True:
            params = {"maxResults": max_results}
            if page_token:
                params["pageToken"] = page_token
            page = bearer_get(server, token, "/shares/big/all-tables", **params)
            assert page.status_code == 200, page.text
            assert "\n" not in page.text.strip()
            body = page.json()
            assert len(body.get("items", [])) <= max_results
            seen += [(item["schema"], item["name"]) for item in body.get("items", [])]
            pages += 1
            page_token = body.get("nextPageToken")
            assert page_token != ""
            if not page_token:
                break
            if max_results == 1 and pages > 1300:
                pytest.fail("pagination does not end")
        assert seen == expected, max_results
    # Per-schema listing pages too, and a token from it cannot page another listing.
    first = bearer_get(server, token, "/shares/big/schemas/schema03/tables", maxResults=7).json()
    assert [item["name"] for item in first["items"]] == [f"t{t:02d}" for t in range(7)]
    foreign = bearer_get(
        server, token, "/shares/big/schemas/schema04/tables", pageToken=first["nextPageToken"]
    )
    assert foreign.status_code == 400 and foreign.json()["errorCode"] == "INVALID_PARAMETER_VALUE"
    token_text = first["nextPageToken"]
    for forged in (token_text[:-4], token_text[::-1], "x" + token_text, "garbage"):
        bad = bearer_get(server, token, "/shares/big/schemas/schema03/tables", pageToken=forged)
        assert bad.status_code == 400, forged
    schemas_page = bearer_get(server, token, "/shares/big/schemas", maxResults=7).json()
    assert [item["name"] for item in schemas_page["items"]] == [f"schema{s:02d}" for s in range(7)]
    assert all(item["share"] == "big" for item in schemas_page["items"])
    for bad_max in ("-1", "501", "abc"):
        bad = bearer_get(server, token, "/shares", maxResults=bad_max)
        assert bad.status_code == 400 and bad.json()["errorCode"] == "INVALID_PARAMETER_VALUE"


def test_token_lifecycle_and_isolation(node):
    server, cli = node
    server.s3_client().create_bucket(Bucket="lake")
    write_delta_logs(server, "lake", "a/", "b/")
    cli.run("table", "share", "create", "local/share-a", "s", "t:delta:lake:a/")
    cli.run("table", "share", "create", "local/share-b", "s", "t:delta:lake:b/")
    token_a = cli.json("table", "share", "token", "create", "local/share-a")
    token_b = cli.json("table", "share", "token", "create", "local/share-b")

    assert bearer_get(server, token_a["token"], "/shares").json()["items"][0]["name"] == "share-a"
    # A token of share A on share B: 404, exactly as for a share that does not exist.
    for path in ("/shares/share-b", "/shares/share-b/schemas", "/shares/share-b/all-tables",
                 "/shares/share-b/schemas/s/tables", "/shares/nope"):
        response = bearer_get(server, token_a["token"], path)
        assert response.status_code == 404, path
        assert response.json()["errorCode"] == "RESOURCE_DOES_NOT_EXIST"
    assert bearer_get(server, token_a["token"], "/shares/share-a/schemas/nope/tables").status_code == 404
    # Case-insensitive lookups.
    assert bearer_get(server, token_a["token"], "/shares/SHARE-A/schemas/S/tables").status_code == 200

    # Missing and wrong tokens: 401.
    assert requests.get(f"{server.endpoint}{SHARING}/shares", timeout=10).status_code == 401
    wrong = bearer_get(server, "dstkn_" + "x" * 43, "/shares")
    assert wrong.status_code == 401 and wrong.json()["errorCode"] == "UNAUTHENTICATED"

    # Expired: a token with a short life stops working.
    short = cli.json("table", "share", "token", "create", "local/share-a", "--expires", "1m")
    assert bearer_get(server, short["token"], "/shares").status_code == 200
    expired = server.signed_request(
        "POST", "/minio/admin/v4/delta-sharing/shares/share-a/tokens",
        body=json.dumps({"expiresAt": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))}).encode(),
    )
    assert expired.status == 200, expired
    expired_token = json.loads(expired.body)["token"]
    assert bearer_get(server, expired_token, "/shares").status_code == 200
    time.sleep(3)
    assert bearer_get(server, expired_token, "/shares").status_code == 401

    # Removed: 401 on the very next request.
    listed = cli.json("table", "share", "token", "list", "local/share-b")
    assert [t["tokenId"] for t in listed["tokens"]] == [token_b["tokenId"]]
    assert "token" not in listed["tokens"][0]
    cli.run("table", "share", "token", "remove", "local", token_b["tokenId"])
    assert bearer_get(server, token_b["token"], "/shares").status_code == 401

    # Profiles cannot be re-issued from hashes: a clear error.
    profile = server.signed_request(
        "GET", f"/minio/admin/v4/delta-sharing/tokens/{short['tokenId']}/profile")
    assert profile.status == 400 and b"only a hash" in profile.body

    # Removing a share revokes its tokens.
    cli.run("table", "share", "remove", "local/share-a")
    assert bearer_get(server, token_a["token"], "/shares").status_code == 401



def test_state_survives_restart_and_is_hashed_on_disk(node):
    server, cli = node
    server.s3_client().create_bucket(Bucket="lake")
    write_delta_logs(server, "lake", "t/")
    cli.run("table", "share", "create", "local/keep", "s", "t:delta:lake:t/", "--description", "d")
    created = cli.json("table", "share", "token", "create", "local/keep")
    server.restart()
    cli.run("alias", "set", "local", server.endpoint, server.access_key, server.secret_key)
    info = cli.json("table", "share", "info", "local/keep")
    assert info["share"]["schemas"][0]["tables"][0]["name"] == "t"
    assert bearer_get(server, created["token"], "/shares").status_code == 200
    secret = created["token"].encode()
    for drive in server.drives:
        for path in Path(drive).rglob("*"):
            if path.is_file():
                assert secret not in path.read_bytes(), path


def test_admin_api_requires_root_signature(node):
    server, _ = node
    unsigned = requests.get(f"{server.endpoint}/minio/admin/v4/delta-sharing/shares", timeout=10)
    assert unsigned.status_code == 403
    wrong = server.signed_request("GET", "/minio/admin/v4/delta-sharing/shares", secret_key="nope")
    assert wrong.status == 403
    # A bearer token never opens admin routes.
    bearer = requests.get(
        f"{server.endpoint}/minio/admin/v4/delta-sharing/shares",
        headers={"Authorization": "Bearer dstkn_x"}, timeout=10)
    assert bearer.status_code in (400, 403)
    assert server.signed_request("GET", "/minio/admin/v4/delta-sharing/shares").status == 200


def test_bad_input_is_refused_and_nothing_is_stored(node):
    server, cli = node
    server.s3_client().create_bucket(Bucket="lake")
    for spec in ("employees", "t:parquet:lake:x/", "t:delta:lake", "t.x:delta:lake:x/",
                 "t:delta:NoSuchBucket:x/"):
        result = cli.run("table", "share", "create", "local/bad", "s", spec, check=False)
        assert result.returncode in (1, 2), spec
        assert "NAME:delta:BUCKET:PATH/" in result.stderr or "bucket" in result.stderr, result.stderr
    result = cli.run("table", "share", "create", "local/bad", "s", "t:delta:missing-bucket:x/",
                     check=False)
    assert result.returncode == 1 and "does not exist" in result.stderr
    # Issue 12: a path without a Delta log is refused at share time, as an Iceberg path is.
    result = cli.run("table", "share", "create", "local/bad", "s", "t:delta:lake:x/",
                     check=False)
    assert result.returncode == 1, result
    assert "table 't': lake/x/ is not a Delta table" in result.stderr, result.stderr
    assert "x/_delta_log/ holds no Delta commit or checkpoint" in result.stderr, result.stderr
    write_delta_logs(server, "lake", "x/", "a/", "b/")
    cli.run("table", "share", "create", "local/ok", "s", "t:delta:lake:x/")
    dup = cli.run("table", "share", "create", "local/OK", "s", "t:delta:lake:x/", check=False)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    for name in ("a b", "x" * 256, "tab\tname"):
        response = server.signed_request(
            "POST", "/minio/admin/v4/delta-sharing/shares", body=json.dumps({"name": name}).encode())
        assert response.status == 400, name
    unicode_ok = server.signed_request(
        "POST", "/minio/admin/v4/delta-sharing/shares", body=json.dumps({"name": "ünïcode"}).encode())
    assert unicode_ok.status == 200
    dup_tables = {"name": "dups", "schemas": [{"name": "s", "tables": [
        {"name": "t", "sourceType": "delta", "bucket": "lake", "location": "a/"},
        {"name": "T", "sourceType": "delta", "bucket": "lake", "location": "b/"}]}]}
    response = server.signed_request(
        "POST", "/minio/admin/v4/delta-sharing/shares", body=json.dumps(dup_tables).encode())
    assert response.status == 400
    huge = server.signed_request(
        "POST", "/minio/admin/v4/delta-sharing/shares",
        body=json.dumps({"name": "huge", "description": "x" * (2 << 20)}).encode())
    assert huge.status in (400, 413)
    malformed = server.signed_request(
        "POST", "/minio/admin/v4/delta-sharing/shares", body=b"{not json")
    assert malformed.status == 400
    names = sorted(share["name"] for share in cli.json("table", "share", "list", "local")["shares"])
    assert names == ["ok", "ünïcode"]
    unknown = cli.run("table", "share", "list", "nosuchalias", check=False)
    assert unknown.returncode == 1 and "nosuchalias" in unknown.stderr
    usage = cli.run("table", "share", "create", check=False)
    assert usage.returncode == 2


def test_update_adds_and_removes_tables(node):
    server, cli = node
    server.s3_client().create_bucket(Bucket="lake")
    write_delta_logs(server, "lake", "employees/", "sales/", "ledger/")
    cli.run("table", "share", "create", "local/grow", "HR", "employees:delta:lake:employees/")
    token = cli.json("table", "share", "token", "create", "local/grow")["token"]
    before = cli.json("table", "share", "info", "local/grow")["share"]
    employees_id = before["schemas"][0]["tables"][0]["id"]
    cli.run("table", "share", "update", "local/grow",
            "--add", "HR:sales:delta:lake:sales/", "--add", "Finance:ledger:delta:lake:ledger/",
            "--description", "grown")
    tables = bearer_get(server, token, "/shares/grow/all-tables").json()["items"]
    assert sorted((t["schema"], t["name"]) for t in tables) == [
        ("Finance", "ledger"), ("HR", "employees"), ("HR", "sales")]
    assert next(t["id"] for t in tables if t["name"] == "employees") == employees_id
    info = cli.json("table", "share", "info", "local/grow")["share"]
    assert info["description"] == "grown"
    cli.run("table", "share", "update", "local/grow", "--remove", "HR/employees,Finance/ledger")
    tables = bearer_get(server, token, "/shares/grow/all-tables").json()["items"]
    assert [(t["schema"], t["name"]) for t in tables] == [("HR", "sales")]
    assert bearer_get(server, token, "/shares/grow/schemas/Finance/tables").status_code == 404
    missing = cli.run("table", "share", "update", "local/grow", "--remove", "HR/nope", check=False)
    assert missing.returncode == 1 and "not in the share" in missing.stderr
    bad = cli.run("table", "share", "update", "local/grow", "--add", "sales:delta:lake", check=False)
    assert bad.returncode == 2
    nothing = cli.run("table", "share", "update", "local/grow", check=False)
    assert nothing.returncode == 2
    help_text = cli.run("table", "share", "create", "--help").stdout
    assert "Example" in help_text and "NAME:delta:BUCKET:PATH/" in help_text
