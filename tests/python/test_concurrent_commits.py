"""Issue 2, test 2: two processes commit to one Delta table at once; every commit lands once.

delta-rs commits with `PUT _delta_log/N.json` + `If-None-Match: *`; the loser of a race must
get 412 and retry at N+1. A node that lets both writers win loses or duplicates commits.
"""

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from deltalake import DeltaTable, write_deltalake

pytestmark = pytest.mark.timeout(600)

APPENDS_PER_WRITER = 20
WRITER_COUNT = 2

WRITER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import pandas as pd
    from deltalake import CommitProperties, write_deltalake

    uri, options = sys.argv[1], json.loads(sys.argv[2])
    writer, appends = int(sys.argv[3]), int(sys.argv[4])
    for index in range(appends):
        row_id = 1000 * (writer + 1) + index
        write_deltalake(
            uri,
            pd.DataFrame({"id": [row_id], "writer": [writer]}),
            mode="append",
            storage_options=options,
            commit_properties=CommitProperties(max_commit_retries=200),
        )
    print(f"writer {writer} done")
    """
)


def test_two_processes_append_twenty_times_each(server, tmp_path):
    server.s3_client().create_bucket(Bucket="race")
    options = server.storage_options()
    uri = "s3://race/table/"
    initial_ids = [1, 2, 3]
    write_deltalake(
        uri, pd.DataFrame({"id": initial_ids, "writer": [-1] * 3}), storage_options=options
    )
    assert DeltaTable(uri, storage_options=options).version() == 0

    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT)
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                uri,
                json.dumps(options),
                str(writer),
                str(APPENDS_PER_WRITER),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for writer in range(WRITER_COUNT)
    ]
    for writer in writers:
        stdout, stderr = writer.communicate(timeout=540)
        assert writer.returncode == 0, f"writer failed:\n{stdout}\n{stderr}"

    table = DeltaTable(uri, storage_options=options)
    commit_count = WRITER_COUNT * APPENDS_PER_WRITER
    assert table.version() == commit_count, "every append must be exactly one version"
    history = table.history()
    assert len(history) == commit_count + 1
    assert sorted(entry["version"] for entry in history) == list(range(commit_count + 1))

    ids = table.to_pandas()["id"].tolist()
    expected = initial_ids + [
        1000 * (writer + 1) + index
        for writer in range(WRITER_COUNT)
        for index in range(APPENDS_PER_WRITER)
    ]
    assert sorted(ids) == sorted(expected), "each row must be present exactly once"

    # Each commit file holds exactly one add action: no commit was overwritten by the other.
    s3 = server.s3_client()
    adds = 0
    for version in range(1, commit_count + 1):
        body = s3.get_object(Bucket="race", Key=f"table/_delta_log/{version:020}.json")["Body"]
        actions = [json.loads(line) for line in body.read().splitlines() if line.strip()]
        adds += sum("add" in action for action in actions)
    assert adds == commit_count
