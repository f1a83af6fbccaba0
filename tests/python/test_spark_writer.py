"""Issue 12 item 9: Spark as a writer. `delta-spark` over `s3a://` (hadoop-aws, path-style, the
node's endpoint and credentials) writes, appends to, merges into, optimizes and deletes from a
Delta table in the node; after each step the node shares it and `delta_sharing`, Spark itself
and `deltalake` read the same rows, which are the rows expected.

Needs Java and the jars `./test.sh` fetches with Maven into `tests/spark/jars/`
(`tests/spark/pom.xml`); Spark itself is the pyspark wheel. Spark downloads nothing: the jars go
in with `spark.jars`. A missing jar or Java fails the module, it never skips. One JVM for the
module. Marked `spark`: `./test.sh` runs these once, not once per drive I/O back-end.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from test_sharing_catalog import Cli

pytestmark = [pytest.mark.spark, pytest.mark.timeout(900)]

JARS_DIR = Path(__file__).resolve().parents[1] / "spark" / "jars"
# Jars whose absence makes Spark fail late with a ClassNotFoundException; checked up front.
REQUIRED_JAR_PREFIXES = ("delta-spark_2.13-", "delta-storage-", "hadoop-aws-", "s3-2", "sts-2")
SCHEMA = "id long, name string, grp string"


def spark_jars() -> list[str]:
    jars = sorted(str(path) for path in JARS_DIR.glob("*.jar"))
    missing = [
        prefix
        for prefix in REQUIRED_JAR_PREFIXES
        if not any(Path(jar).name.startswith(prefix) for jar in jars)
    ]
    if missing:
        pytest.fail(
            f"Spark writer jars missing in {JARS_DIR} ({', '.join(missing)}*): run "
            "`mvn -q -f tests/spark/pom.xml dependency:copy-dependencies "
            "-DoutputDirectory=tests/spark/jars` (./test.sh does)",
            pytrace=False,
        )
    return jars


@pytest.fixture(scope="module")
def spark():
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.fail("Java is needed for the Spark tests (java not on PATH, JAVA_HOME unset)",
                    pytrace=False)
    jars = spark_jars()
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("lakeshare-spark-writer")
        .config("spark.jars", ",".join(jars))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog",
                "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.hadoop.fs.s3a.impl", "org.apache.hadoop.fs.s3a.S3AFileSystem")
        .config("spark.hadoop.fs.s3a.path.style.access", "true")
        .config("spark.hadoop.fs.s3a.connection.ssl.enabled", "false")
        .config("spark.hadoop.fs.s3a.endpoint.region", "us-east-1")
        # Each test's node has its own port: no cached file system may outlive it.
        .config("spark.hadoop.fs.s3a.impl.disable.cache", "true")
        # A refused request fails the test at once instead of after minutes of retries.
        .config("spark.hadoop.fs.s3a.attempts.maximum", "1")
        .config("spark.hadoop.fs.s3a.retry.limit", "1")
        .config("spark.delta.logStore.s3a.impl", "io.delta.storage.S3SingleDriverLogStore")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def point_s3a_at(spark, server) -> None:
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    conf.set("fs.s3a.endpoint", server.endpoint)
    conf.set("fs.s3a.access.key", server.access_key)
    conf.set("fs.s3a.secret.key", server.secret_key)


def rows_of_frame(frame) -> list[tuple]:
    return sorted(
        (int(row["id"]), row["name"], row["grp"])
        for _, row in frame[["id", "name", "grp"]].iterrows()
    )


def test_spark_writes_merges_optimizes_and_the_share_serves_it(spark, lakeshare_server, tmp_path):
    import delta_sharing
    from deltalake import DeltaTable

    server = lakeshare_server(drives=4, parity=2)
    point_s3a_at(spark, server)
    server.s3_client().create_bucket(Bucket="lake")
    cli = Cli(tmp_path / "home")
    cli.home.mkdir()
    cli.run("alias", "set", "local", server.endpoint, server.access_key, server.secret_key)
    path = "s3a://lake/sales/orders"
    expected: dict[int, tuple] = {}
    profile = tmp_path / "spark.share"

    def check(step: str, version: int) -> None:
        want = sorted(expected.values())
        by_spark = sorted(
            (row["id"], row["name"], row["grp"])
            for row in spark.read.format("delta").load(path).collect()
        )
        assert by_spark == want, f"{step}: Spark reads back other rows"
        table = DeltaTable("s3://lake/sales/orders", storage_options=server.storage_options())
        assert table.version() == version, step
        assert rows_of_frame(table.to_pandas()) == want, f"{step}: deltalake disagrees"
        shared = delta_sharing.load_as_pandas(f"{profile}#spark.s.orders")
        assert rows_of_frame(shared) == want, f"{step}: the share disagrees"
        shared_client = delta_sharing.SharingClient(str(profile))
        assert [t.name for t in shared_client.list_all_tables()] == ["orders"], step

    # 1. Create, partitioned (s3a makes the partition folders and directory markers).
    first = [(1, "ada", "x"), (2, "bob", "y"), (3, "cy", "x")]
    spark.createDataFrame(first, SCHEMA).write.format("delta").partitionBy("grp").save(path)
    expected.update({row[0]: row for row in first})
    cli.run("table", "share", "create", "local/spark", "s", "orders:delta:lake:sales/orders/")
    token = cli.json("table", "share", "token", "create", "local/spark")
    profile.write_text(json.dumps(token["profile"]))
    check("create", 0)

    # 2. Append.
    appended = [(4, "dee", "y"), (5, "eve", "z")]
    spark.createDataFrame(appended, SCHEMA).write.format("delta").mode("append").save(path)
    expected.update({row[0]: row for row in appended})
    check("append", 1)

    # 3. MERGE INTO: one update, one insert.
    spark.createDataFrame([(2, "BOB", "y"), (6, "fay", "x")], SCHEMA).createOrReplaceTempView(
        "changes"
    )
    spark.sql(
        f"MERGE INTO delta.`{path}` AS t USING changes AS s ON t.id = s.id "
        "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
    )
    expected[2] = (2, "BOB", "y")
    expected[6] = (6, "fay", "x")
    check("merge", 2)

    # 4. OPTIMIZE compacts each partition into one file; the rows stay.
    metrics = spark.sql(f"OPTIMIZE delta.`{path}`").collect()[0]["metrics"]
    assert metrics["numFilesRemoved"] > metrics["numFilesAdded"] >= 1, metrics
    check("optimize", 3)
    table = DeltaTable("s3://lake/sales/orders", storage_options=server.storage_options())
    assert len(table.file_uris()) == 3, "one file per partition after OPTIMIZE"

    # 5. DELETE.
    spark.sql(f"DELETE FROM delta.`{path}` WHERE id = 1")
    del expected[1]
    check("delete", 4)

    # A share created after the last step serves the same rows.
    cli.run("table", "share", "create", "local/late", "s", "orders:delta:lake:sales/orders/")
    late = tmp_path / "late.share"
    late_token = cli.json("table", "share", "token", "create", "local/late")
    late.write_text(json.dumps(late_token["profile"]))
    frame = delta_sharing.load_as_pandas(f"{late}#late.s.orders")
    assert rows_of_frame(frame) == sorted(expected.values())
