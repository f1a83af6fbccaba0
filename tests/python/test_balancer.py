"""Issue 13: three sharing nodes behind Debian's nginx as the load balancer, over one Ceph RGW.

Profiles name the balancer (LAKESHARE_SHARING_ENDPOINT); nginx round-robins requests over the
three `--backend` nodes and tells which one answered (`X-Upstream`). A share made on node 1
and a token made on node 2 read through the balancer; a token revoked on node 3 is refused on
every node within 2 s; a new commit is served by every node; the pages of one paged query,
served by different nodes, stay on one version; a node killed with SIGKILL in the middle of a
large answer is left behind by the client's retry, and the catalog is whole on the others; 50
concurrent catalog changes (share creates and updates, token creates and removes) spread over the
three nodes are all kept, and every node lists the same catalog."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import requests

from nginx_server import Nginx, free_port
from test_async_queries import synth_table
from test_remote_backend import cli_for, rgw_options, sharing_node, write_table
from test_sharing_delta import assert_same_rows, direct_read

pytestmark = pytest.mark.ceph

NODES = 3


class Balancer(Nginx):
    """nginx round-robin over the given `host:port`s on a free loopback port."""

    def start(self, upstreams: list[str]) -> "Balancer":
        servers = "\n".join(f"        server {upstream} max_fails=1 fail_timeout=30s;"
                            for upstream in upstreams)
        self.configure(f"""
    access_log off;
    upstream sharing {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://sharing;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host:$server_port;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            add_header X-Upstream $upstream_addr always;
        }}
    }}""")
        super().start()
        return self


@pytest.fixture
def cluster(ceph_rgw, lakeshare_server, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    bucket, catalog = f"lake-{suffix}", f"catalog-{suffix}"
    s3 = ceph_rgw.s3_client()
    s3.create_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=catalog)
    balancer = Balancer(tmp_path / "nginx", free_port())
    nodes = [
        sharing_node(lakeshare_server, ceph_rgw, catalog,
                     {"LAKESHARE_SHARING_ENDPOINT": balancer.endpoint})
        for _ in range(NODES)
    ]
    balancer.start([node.host_port for node in nodes])
    clis = [cli_for(tmp_path, f"h{index}", node) for index, node in enumerate(nodes)]
    yield ceph_rgw, bucket, nodes, clis, balancer
    balancer.stop()


def wait_until(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_three_nodes_behind_nginx_serve_one_catalog(cluster, tmp_path):
    import delta_sharing

    rgw, bucket, nodes, clis, balancer = cluster
    uri = f"s3://{bucket}/people"
    write_table(rgw, uri, [1, 2, 3, 4, 5, 6])
    for extra in ([7], [8], [9], [10]):
        write_table(rgw, uri, extra, mode="append")

    clis[0].run("table", "share", "create", "n/lb", "s", f"people:delta:{bucket}:people/")
    made = wait_until(
        lambda: (lambda result: result if result.returncode == 0 else None)(
            clis[1].run("table", "share", "token", "create", "n/lb", "--json", check=False)),
        5, "the share made on node 1 is unknown on node 2")
    token = json.loads(made.stdout)
    assert token["profile"]["endpoint"].startswith(balancer.endpoint)
    profile = tmp_path / "lb.share"
    profile.write_text(json.dumps(token["profile"]))
    endpoint = token["profile"]["endpoint"]
    auth = {"Authorization": f"Bearer {token['profile']['bearerToken']}"}

    # Every node knows the token within 2 s: NODES requests in a row reach every node.
    def all_nodes_answer(status: int) -> bool:
        seen = {}
        for _ in range(NODES * 2):
            answer = requests.get(f"{endpoint}/shares", headers=auth, timeout=30)
            seen[answer.headers.get("X-Upstream")] = answer.status_code
        return len(seen) == NODES and set(seen.values()) == {status}

    wait_until(lambda: all_nodes_answer(200), 2.0, "a node does not know the new token")
    shared = delta_sharing.load_as_pandas(f"{profile}#lb.s.people")
    assert_same_rows(shared, direct_read(uri, rgw_options(rgw)), "through the balancer")

    # The pages of one query, served by different nodes, stay on one version.
    url = f"{endpoint}/shares/lb/schemas/s/tables/people/query"
    ids, upstreams, versions, page_token = [], set(), set(), None
    while True:
        body = {"maxFiles": 2, **({"pageToken": page_token} if page_token else {})}
        answer = requests.post(url, headers=auth, json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        upstreams.add(answer.headers["X-Upstream"])
        versions.add(answer.headers["delta-table-version"])
        lines = [json.loads(line) for line in answer.text.splitlines()]
        ids += [line["file"]["id"] for line in lines if "file" in line]
        page_token = lines[-1]["endStreamAction"].get("nextPageToken")
        if not page_token:
            break
        if len(ids) == 2:
            write_table(rgw, uri, [11], mode="append")  # a commit between pages
    assert len(upstreams) > 1, upstreams
    assert len(versions) == 1 and len(ids) == 5 and len(set(ids)) == 5, (versions, ids)

    assert versions == {"4"}, versions
    # The commit made between the pages is served by every node within the 1-s bound.
    def every_node_serves_version_5() -> bool:
        answers = [requests.post(url, headers=auth, json={}, timeout=60)
                   for _ in range(NODES * 2)]
        return ({answer.headers["delta-table-version"] for answer in answers} == {"5"}
                and len({answer.headers["X-Upstream"] for answer in answers}) == NODES)

    wait_until(every_node_serves_version_5, 3.0, "a node still serves the old version")

    # Revoked on node 3: refused on every node within 2 s.
    clis[2].run("table", "share", "token", "remove", "n", token["tokenId"])
    wait_until(lambda: all_nodes_answer(401), 2.0, "a node still accepts the revoked token")


def test_a_node_killed_mid_answer_is_left_behind_by_the_retry(cluster, tmp_path):
    rgw, bucket, nodes, clis, balancer = cluster
    synth_table(rgw, "wide/", 100_000, bucket=bucket)
    clis[0].run("table", "share", "create", "n/big", "s", f"wide:delta:{bucket}:wide/")
    token = wait_until(
        lambda: (lambda result: json.loads(result.stdout) if result.returncode == 0 else None)(
            clis[0].run("table", "share", "token", "create", "n/big", "--json", check=False)),
        5, "no token")
    endpoint = token["profile"]["endpoint"]
    auth = {"Authorization": f"Bearer {token['profile']['bearerToken']}"}
    url = f"{endpoint}/shares/big/schemas/s/tables/wide/query"
    wait_until(lambda: all(requests.get(f"{endpoint}/shares", headers=auth, timeout=30)
                           .status_code == 200 for _ in range(NODES * 2)), 2.0, "token unknown")

    with requests.post(url, headers=auth, json={}, stream=True, timeout=120) as answer:
        assert answer.status_code == 200
        serving = answer.headers["X-Upstream"]
        chunks = answer.iter_content(64 * 1024)
        next(chunks)
        victim = next(node for node in nodes if node.host_port == serving)
        victim.kill9()
        with pytest.raises(requests.exceptions.RequestException):
            for _ in chunks:
                pass

    # The client's retry through the balancer: a whole answer from another node.
    retry = requests.post(url, headers=auth, json={}, timeout=300)
    assert retry.status_code == 200, retry.text[:300]
    assert retry.headers["X-Upstream"] != serving
    lines = retry.text.splitlines()
    assert len(lines) == 100_002 and all(line.startswith('{"file":') for line in lines[2:])
    # The catalog is whole on the nodes left.
    for node, cli in zip(nodes, clis):
        if node is victim:
            continue
        names = {share["name"] for share in cli.json("table", "share", "list", "n")["shares"]}
        assert names == {"big"}, names



def test_fifty_concurrent_catalog_changes_over_three_nodes_are_all_kept(cluster):
    """50 catalog changes at once, round-robin over the three nodes (not the balancer): share
    creates, share updates (a table added, a table removed, the description changed), token
    creates and token removes. Every command succeeds, and within a few seconds every node
    lists the same catalog, which holds every change: a lost update fails the test."""
    import random

    from test_sharing_catalog import write_delta_logs

    rgw, bucket, nodes, clis, balancer = cluster
    updated = [f"upd{k}" for k in range(4)]
    created = [f"new{i:02d}" for i in range(12)]
    added = {share: [f"{share}a", f"{share}b"] for share in updated}
    write_delta_logs(rgw, bucket, "keep/", "drop/",
                     *(f"{table}/" for tables in added.values() for table in tables))

    # Before: the shares to update, and tokens to remove (10) and to keep (4).
    for share in updated:
        clis[0].run("table", "share", "create", f"n/{share}", "s", f"keep:delta:{bucket}:keep/",
                    f"drop:delta:{bucket}:drop/", "--description", "before")
    early = [(updated[i % 4], clis[i % NODES].json("table", "share", "token", "create",
                                                   f"n/{updated[i % 4]}")) for i in range(14)]
    to_remove, to_keep = early[:10], early[10:]

    def token_ids(cli, share: str) -> set:
        return {token["tokenId"]
                for token in cli.json("table", "share", "token", "list", f"n/{share}")["tokens"]}

    def setup_known(cli) -> bool:
        names = {share["name"] for share in cli.json("table", "share", "list", "n")["shares"]}
        return names == set(updated) and all(
            token_ids(cli, share) == {t["tokenId"] for s, t in early if s == share}
            for share in updated)

    for index, cli in enumerate(clis):
        wait_until(lambda: setup_known(cli), 5, f"node {index} does not know the setup catalog")

    # The 50 changes.
    operations: list[tuple[str, tuple]] = []
    for share in updated:
        first_table, second_table = added[share]
        operations += [
            ("add", ("table", "share", "update", f"n/{share}",
                     "--add", f"s:{first_table}:delta:{bucket}:{first_table}/")),
            ("add", ("table", "share", "update", f"n/{share}",
                     "--add", f"s:{second_table}:delta:{bucket}:{second_table}/")),
            ("remove table", ("table", "share", "update", f"n/{share}", "--remove", "s/drop")),
            ("describe", ("table", "share", "update", f"n/{share}",
                          "--description", f"after {share}")),
        ]
    for share in created:
        operations.append(("create", ("table", "share", "create", f"n/{share}", "s",
                                      f"t:delta:{bucket}:keep/", "--description", f"made {share}")))
    for index in range(12):
        operations.append(("token", ("table", "share", "token", "create",
                                     f"n/{updated[index % 4]}", "--json")))
    for _, token in to_remove:
        operations.append(("revoke", ("table", "share", "token", "remove", "n",
                                      token["tokenId"])))
    assert len(operations) == 50
    random.Random(13).shuffle(operations)

    barrier = threading.Barrier(len(operations))
    results: list = [None] * len(operations)

    def run(index: int) -> None:
        _, args = operations[index]
        barrier.wait(timeout=60)
        began = time.monotonic()
        results[index] = (clis[index % NODES].run(*args, check=False), began, time.monotonic())

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(operations))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    finished = time.monotonic()
    assert all(result is not None for result in results), "a CLI command did not finish"
    failed = [(index % NODES, operations[index][1], result.returncode, result.stderr)
              for index, (result, _, _) in enumerate(results) if result.returncode != 0]
    assert not failed, failed
    # The changes overlapped (a run that went one by one would test nothing here).
    first_end = min(ended for _, _, ended in results)
    overlapping = sum(1 for _, began, _ in results if began < first_end)
    assert overlapping >= 10, f"only {overlapping} of 50 changes began before the first ended"

    made = {}  # share -> the tokens made in the concurrent phase
    for (kind, args), (result, _, _) in zip(operations, results):
        if kind == "token":
            token = json.loads(result.stdout)
            made.setdefault(token["shareName"], []).append(token)
    assert sum(len(tokens) for tokens in made.values()) == 12

    # The catalog every node must list: SCHEMA/TABLE=BUCKET:PATH for the tables.
    def spec(schema: str, table: str, table_bucket: str, location: str) -> str:
        return f"{schema}/{table}={table_bucket}:{location}"

    expected = {}
    for share in updated:
        expected[share] = {
            "description": f"after {share}",
            "tables": sorted([spec("s", "keep", bucket, "keep/")]
                             + [spec("s", table, bucket, f"{table}/") for table in added[share]]),
            "tokens": sorted([t["tokenId"] for s, t in to_keep if s == share]
                             + [t["tokenId"] for t in made.get(share, [])]),
        }
    for share in created:
        expected[share] = {"description": f"made {share}",
                           "tables": [spec("s", "t", bucket, "keep/")], "tokens": []}

    def catalog_of(cli) -> tuple[dict, list]:
        """(share -> description, tables, token ids; the raw share list) as one node lists it."""
        shares = cli.json("table", "share", "list", "n")["shares"]
        listed = {}
        for share in shares:
            listed[share["name"]] = {
                "description": share.get("description"),
                "tables": sorted(spec(schema["name"], table["name"], table["bucket"],
                                      table["location"])
                                 for schema in share["schemas"] for table in schema["tables"]),
                "tokens": sorted(token_ids(cli, share["name"])),
            }
        return listed, sorted(shares, key=lambda share: share["name"])

    def differences(listed: dict) -> dict:
        return {name: {"expected": expected.get(name), "listed": listed.get(name)}
                for name in sorted(set(expected) | set(listed))
                if expected.get(name) != listed.get(name)}

    def updates_of(share: str) -> list:
        """The update commands on one share: node, command, start and end (s after the first)."""
        origin = min(began for _, began, _ in results)
        return [(index % NODES, " ".join(args[4:]), round(began - origin, 3),
                 round(ended - origin, 3))
                for index, ((kind, args), (_, began, ended)) in enumerate(zip(operations, results))
                if args[2] == "update" and args[3] == f"n/{share}"]

    # Every node lists the expected catalog within 5 s of the last change.
    while True:
        listings = [catalog_of(cli) for cli in clis]
        if all(listed == expected for listed, _ in listings):
            break
        if time.monotonic() - finished > 5.0:
            break
        time.sleep(0.2)

    # On every node: a removed token is refused, a kept or new one accepted (for its share).
    for node in nodes:
        for share, token in to_remove:
            answer = requests.get(f"{node.endpoint}/_delta-sharing/v1/shares", timeout=30,
                                  headers={"Authorization": f"Bearer {token['token']}"})
            assert answer.status_code == 401, (node.endpoint, share, answer.status_code)
        for share, token in to_keep + [(s, t) for s, tokens in made.items() for t in tokens]:
            answer = requests.get(f"{node.endpoint}/_delta-sharing/v1/shares", timeout=30,
                                  headers={"Authorization": f"Bearer {token['token']}"})
            assert answer.status_code == 200, (node.endpoint, share, answer.text)
            assert [item["name"] for item in answer.json()["items"]] == [share], answer.text

    wrong = {f"node {index}": differences(listed)
             for index, (listed, _) in enumerate(listings) if listed != expected}
    if wrong:
        lost = sorted({name for diffs in wrong.values() for name in diffs})
        agree = listings[0][1] == listings[1][1] == listings[2][1]
        pytest.fail(
            f"5 s after the 50 changes, {len(wrong)} node(s) do not list the expected catalog "
            f"(the three nodes {'agree' if agree else 'disagree'}):\n"
            + json.dumps(wrong, indent=1) + "\nthe updates of those shares "
            "(node, arguments, start s, end s):\n"
            + json.dumps({name: updates_of(name) for name in lost}, indent=1),
            pytrace=False)
    # The three nodes agree on the whole catalog, ids and timestamps included.
    seen = [raw for _, raw in listings]
    assert seen[0] == seen[1] == seen[2], "the nodes list different catalogs"
