//! `loadtest`: the bundled load harness. It drives a running node (or any HTTP server given
//! by an explicit URL) at high concurrency and prints req/s, GB/s and p50/p99/max latency,
//! as a text block and, with `--json`, as one JSON object on stdout.
//!
//! Invariants: every run is bounded by `--requests` or `--duration`; only the endpoint and
//! URLs given on the command line are contacted.

mod files;
mod payload;
mod report;
mod runner;
mod s3;
mod sigv4;
mod units;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::payload::{object_name, object_payload};
use crate::report::Report;
use crate::runner::{plan_request, Limit, RequestFactory};
use crate::s3::S3Endpoint;
use crate::sigv4::Credentials;

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    about = "Drive an S3 node or an HTTP server at high concurrency"
)]
struct Cli {
    /// Print the report as one JSON object on stdout (the text block goes to stderr).
    #[arg(long, global = true)]
    json: bool,
    /// Client runtime threads (default: available cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// GET objects round robin from the node (or plain files with --url-template).
    Get(GetArgs),
    /// PUT objects of --object-bytes to the node.
    Put(PutArgs),
    /// GET one fixed URL.
    HttpGet(HttpGetArgs),
    /// POST `--body` to one fixed URL.
    HttpPost(HttpGetArgs),
    /// Write the bytes `get --setup` uploads as plain files DIR/obj-{i}, for a file server.
    WriteFiles(WriteFilesArgs),
    /// Print a presigned GET URL of object `{prefix}obj-{index}`.
    Presign(PresignArgs),
    /// The anchor of small PUTs: create new files of --file-bytes in every --dir at once,
    /// each written, fsynced and its folder fsynced, as durable creation costs on the drives.
    CreateFiles(CreateFilesArgs),
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// Concurrent workers, one keep-alive connection each.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Run for this long (`10s`, `500ms`, `2m`); default 10s when --requests is absent.
    #[arg(long, value_parser = units::parse_duration, conflicts_with = "requests")]
    duration: Option<Duration>,
    /// Run exactly this many requests.
    #[arg(long)]
    requests: Option<u64>,
}

impl LoadArgs {
    fn limit(&self) -> Limit {
        match (self.requests, self.duration) {
            (Some(count), _) => Limit::Requests(count),
            (None, Some(duration)) => Limit::Duration(duration),
            (None, None) => Limit::Duration(Duration::from_secs(10)),
        }
    }
}

#[derive(Args, Debug)]
struct S3Args {
    /// The node's S3 endpoint.
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    endpoint: String,
    #[arg(long, default_value = "loadtest")]
    bucket: String,
    /// Key prefix; object i is `{prefix}obj-{i}`.
    #[arg(long, default_value = "")]
    prefix: String,
    #[arg(long, env = "LAKESHARE_ROOT_USER", default_value = "minioadmin")]
    access_key: String,
    #[arg(
        long,
        env = "LAKESHARE_ROOT_PASSWORD",
        default_value = "minioadmin",
        hide_env_values = true
    )]
    secret_key: String,
    #[arg(long, default_value = "us-east-1")]
    region: String,
}

impl S3Args {
    fn endpoint(&self) -> anyhow::Result<S3Endpoint> {
        let credentials = Credentials {
            access_key: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
            region: self.region.clone(),
        };
        S3Endpoint::new(&self.endpoint, credentials)
    }

    fn key(&self, index: u64) -> String {
        format!("{}{}", self.prefix, object_name(index))
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GetAuth {
    /// Presigned URLs, computed once per object before the run.
    Presigned,
    /// SigV4 header auth, signed per request.
    Signed,
}

#[derive(Args, Debug)]
struct GetArgs {
    #[command(flatten)]
    s3: S3Args,
    #[command(flatten)]
    load: LoadArgs,
    /// Objects to cycle over.
    #[arg(long, default_value_t = 8)]
    objects: u64,
    /// Object size (`64MiB`), used by --setup.
    #[arg(long, value_parser = units::parse_bytes, default_value = "64MiB")]
    object_bytes: u64,
    /// Create the bucket and upload the objects first.
    #[arg(long)]
    setup: bool,
    #[arg(long, value_enum, default_value_t = GetAuth::Presigned)]
    auth: GetAuth,
    /// GET plain URLs instead of the node, `{i}` replaced by the object index, e.g.
    /// `http://127.0.0.1:8080/obj-{i}`.
    #[arg(long, alias = "raw-url-template")]
    url_template: Option<String>,
    /// GET the absolute URLs listed in this file, one a line, round robin (e.g. the
    /// presigned file URLs of a sharing answer), instead of the node; --objects and
    /// --object-bytes are ignored unless --range-bytes is given (ranges of --object-bytes).
    #[arg(long, conflicts_with_all = ["url_template", "setup"])]
    url_file: Option<PathBuf>,
    /// GET this many bytes of each object (`64KiB`) with a `Range` header, at an offset
    /// that moves with the request index (what a parquet reader asks for), instead of
    /// whole objects; not with `--auth signed`.
    #[arg(long, value_parser = units::parse_bytes)]
    range_bytes: Option<u64>,
}

/// The `Range` header of request `index` over objects of `object_bytes`, when asked.
fn range_header(range_bytes: Option<u64>, object_bytes: u64, index: u64) -> Vec<(String, String)> {
    let Some(length) = range_bytes.filter(|length| *length > 0) else {
        return Vec::new();
    };
    let positions = (object_bytes / length).max(1);
    let start = (index.wrapping_mul(7919) % positions) * length;
    let end = (start + length).min(object_bytes.max(1)) - 1;
    vec![("range".to_string(), format!("bytes={start}-{end}"))]
}

#[derive(Args, Debug)]
struct PutArgs {
    #[command(flatten)]
    s3: S3Args,
    #[command(flatten)]
    load: LoadArgs,
    /// Keys to cycle over (`{prefix}put-{i % objects}`), so disk use stays bounded;
    /// default: the concurrency.
    #[arg(long)]
    objects: Option<u64>,
    #[arg(long, value_parser = units::parse_bytes, default_value = "64MiB")]
    object_bytes: u64,
    /// Create the bucket first.
    #[arg(long)]
    setup: bool,
    /// Send `If-None-Match: *` and PUT a new key every request (`{prefix}put-{run}-{i}`),
    /// as a Delta commit does; --objects is then ignored.
    #[arg(long)]
    if_none_match: bool,
}

#[derive(Args, Debug)]
struct CreateFilesArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Folders to create the files in, comma-separated; one file in each per request.
    #[arg(long, value_delimiter = ',', required = true)]
    dirs: Vec<PathBuf>,
    #[arg(long, value_parser = units::parse_bytes, default_value = "4KiB")]
    file_bytes: u64,
}

#[derive(Args, Debug)]
struct HttpGetArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[arg(long)]
    url: String,
    /// Extra header `Name: value`; repeat for more.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Request body (for `http-post`).
    #[arg(long, default_value = "")]
    body: String,
}

#[derive(Args, Debug)]
struct WriteFilesArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 8)]
    objects: u64,
    #[arg(long, value_parser = units::parse_bytes, default_value = "64MiB")]
    object_bytes: u64,
}

#[derive(Args, Debug)]
struct PresignArgs {
    #[command(flatten)]
    s3: S3Args,
    #[arg(long, default_value_t = 0)]
    index: u64,
}

fn main() -> std::process::ExitCode {
    match run_cli() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadtest: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_cli() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.build().context("start the tokio runtime")?;
    let report = runtime.block_on(run_scenario(cli.scenario))?;
    if let Some(report) = report {
        if cli.json {
            eprint!("{}", report.text());
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", report.text());
        }
    }
    Ok(())
}

async fn run_scenario(scenario: Scenario) -> anyhow::Result<Option<Report>> {
    match scenario {
        Scenario::Get(args) => run_get(args).await.map(Some),
        Scenario::Put(args) => run_put(args).await.map(Some),
        Scenario::HttpGet(args) => run_http(http::Method::GET, args).await.map(Some),
        Scenario::HttpPost(args) => run_http(http::Method::POST, args).await.map(Some),
        Scenario::WriteFiles(args) => {
            payload::write_files(&args.dir, args.objects, args.object_bytes)?;
            eprintln!(
                "wrote {} files of {} bytes to {}",
                args.objects,
                args.object_bytes,
                args.dir.display()
            );
            Ok(None)
        }
        Scenario::CreateFiles(args) => files::run_create_files(
            &args.dirs,
            args.file_bytes,
            args.load.concurrency,
            args.load.limit(),
        )
        .await
        .map(Some),
        Scenario::Presign(args) => {
            let url = args
                .s3
                .endpoint()?
                .presigned_get_url(&args.s3.bucket, &args.s3.key(args.index))?;
            println!("{url}");
            Ok(None)
        }
    }
}

async fn run_get(args: GetArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.objects > 0, "--objects must be at least 1");
    let objects = args.objects;
    if args.setup {
        setup_objects(&args).await?;
    }
    let (range_bytes, object_bytes) = (args.range_bytes, args.object_bytes);
    let factory: RequestFactory = if let Some(path) = &args.url_file {
        let urls = read_url_file(path)?;
        let count = urls.len() as u64;
        Arc::new(move |index| {
            let url = &urls[(index % count) as usize];
            let range = range_header(range_bytes, object_bytes, index);
            plan_request(http::Method::GET, url, &range, Bytes::new())
        })
    } else if let Some(template) = args.url_template {
        anyhow::ensure!(template.contains("{i}"), "--url-template needs an {{i}}");
        Arc::new(move |index| {
            let url = template.replace("{i}", &(index % objects).to_string());
            let range = range_header(range_bytes, object_bytes, index);
            plan_request(http::Method::GET, &url, &range, Bytes::new())
        })
    } else {
        let endpoint = args.s3.endpoint()?;
        match args.auth {
            GetAuth::Presigned => {
                let urls: Vec<String> = (0..objects)
                    .map(|index| endpoint.presigned_get_url(&args.s3.bucket, &args.s3.key(index)))
                    .collect::<anyhow::Result<_>>()?;
                Arc::new(move |index| {
                    let url = &urls[(index % objects) as usize];
                    let range = range_header(range_bytes, object_bytes, index);
                    plan_request(http::Method::GET, url, &range, Bytes::new())
                })
            }
            GetAuth::Signed => {
                anyhow::ensure!(
                    range_bytes.is_none(),
                    "--range-bytes works with presigned or plain URLs, not --auth signed"
                );
                let keys: Vec<String> = (0..objects).map(|index| args.s3.key(index)).collect();
                let bucket = args.s3.bucket.clone();
                Arc::new(move |index| {
                    endpoint.get_object(&bucket, &keys[(index % objects) as usize])
                })
            }
        }
    };
    runner::run("get", args.load.concurrency, args.load.limit(), factory).await
}

/// The non-empty lines of a `--url-file`, each an absolute URL; at least one.
fn read_url_file(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read --url-file {}", path.display()))?;
    let urls: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect();
    anyhow::ensure!(!urls.is_empty(), "--url-file {} has no URL", path.display());
    Ok(urls)
}

async fn run_put(args: PutArgs) -> anyhow::Result<Report> {
    let endpoint = args.s3.endpoint()?;
    if args.setup {
        create_bucket(&endpoint, &args.s3.bucket).await?;
    }
    let objects = args.objects.unwrap_or(args.load.concurrency as u64).max(1);
    let body = object_payload(0, args.object_bytes)?;
    let bucket = args.s3.bucket.clone();
    let prefix = args.s3.prefix.clone();
    if args.if_none_match {
        let run = runner::run_nonce()?;
        let factory: RequestFactory = Arc::new(move |index| {
            let key = format!("{prefix}put-{run}-{index}");
            let mut planned = endpoint.put_object(&bucket, &key, body.clone())?;
            planned.request.headers_mut().insert(
                http::header::IF_NONE_MATCH,
                http::HeaderValue::from_static("*"),
            );
            Ok(planned)
        });
        return runner::run(
            "put-if-none-match",
            args.load.concurrency,
            args.load.limit(),
            factory,
        )
        .await;
    }
    let factory: RequestFactory = Arc::new(move |index| {
        let key = format!("{prefix}put-{}", index % objects);
        endpoint.put_object(&bucket, &key, body.clone())
    });
    runner::run("put", args.load.concurrency, args.load.limit(), factory).await
}

async fn run_http(method: http::Method, args: HttpGetArgs) -> anyhow::Result<Report> {
    let headers: Vec<(String, String)> = args
        .headers
        .iter()
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .with_context(|| format!("header {line:?} has no ':'"))?;
            Ok((name.trim().to_string(), value.trim().to_string()))
        })
        .collect::<anyhow::Result<_>>()?;
    let url = args.url;
    let body = Bytes::from(args.body);
    let scenario = if method == http::Method::POST {
        "http-post"
    } else {
        "http-get"
    };
    let factory: RequestFactory =
        Arc::new(move |_| plan_request(method.clone(), &url, &headers, body.clone()));
    runner::run(scenario, args.load.concurrency, args.load.limit(), factory).await
}

/// Creates the bucket (an existing one is fine) and uploads objects `0..objects`.
async fn setup_objects(args: &GetArgs) -> anyhow::Result<()> {
    let endpoint = args.s3.endpoint()?;
    create_bucket(&endpoint, &args.s3.bucket).await?;
    let object_bytes = args.object_bytes;
    let bucket = args.s3.bucket.clone();
    let prefix = args.s3.prefix.clone();
    let factory: RequestFactory = Arc::new(move |index| {
        let key = format!("{prefix}{}", object_name(index));
        endpoint.put_object(&bucket, &key, object_payload(index, object_bytes)?)
    });
    let concurrency = args.load.concurrency.clamp(1, args.objects as usize);
    let report = runner::run(
        "setup-put",
        concurrency,
        Limit::Requests(args.objects),
        factory,
    )
    .await?;
    anyhow::ensure!(
        report.errors.is_empty(),
        "uploading the objects failed: {:?}",
        report.errors
    );
    eprintln!(
        "setup: uploaded {} objects of {} bytes in {:.2} s ({:.3} GB/s)",
        report.ok, object_bytes, report.seconds, report.gb_per_s
    );
    Ok(())
}

async fn create_bucket(endpoint: &S3Endpoint, bucket: &str) -> anyhow::Result<()> {
    let request = endpoint.create_bucket(bucket)?;
    let request = std::sync::Mutex::new(Some(request));
    let factory: RequestFactory = Arc::new(move |_| {
        let mut slot = request
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned lock"))?;
        slot.take().context("create-bucket request used twice")
    });
    let report = runner::run("create-bucket", 1, Limit::Requests(1), factory).await?;
    // 409 is BucketAlreadyOwnedByYou (or BucketAlreadyExists): the bucket is there.
    let unexpected: Vec<_> = report
        .errors
        .keys()
        .filter(|kind| kind.as_str() != "409")
        .collect();
    anyhow::ensure!(
        unexpected.is_empty(),
        "creating bucket {bucket} failed: {unexpected:?}"
    );
    Ok(())
}

#[cfg(test)]
mod url_file_tests {
    use super::read_url_file;

    #[test]
    fn url_files_keep_their_non_empty_lines_and_refuse_none() {
        let folder = std::env::temp_dir().join(format!("loadtest-urls-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("urls");
        std::fs::write(&path, "http://a/1?x=1\n\n  http://b/2  \n").unwrap();
        assert_eq!(
            read_url_file(&path).unwrap(),
            ["http://a/1?x=1", "http://b/2"]
        );
        std::fs::write(&path, "\n \n").unwrap();
        assert!(read_url_file(&path).is_err());
        std::fs::remove_dir_all(&folder).unwrap();
    }
}

#[cfg(test)]
mod range_tests {
    use super::range_header;

    #[test]
    fn ranges_stay_inside_the_object_and_move_with_the_index() {
        assert!(range_header(None, 1 << 20, 3).is_empty());
        let object = 64 << 20;
        let mut starts = std::collections::BTreeSet::new();
        for index in 0..100 {
            let header = range_header(Some(65536), object, index);
            let (start, end) = header[0].1["bytes=".len()..].split_once('-').unwrap();
            let (start, end): (u64, u64) = (start.parse().unwrap(), end.parse().unwrap());
            assert_eq!(end - start + 1, 65536);
            assert!(end < object);
            starts.insert(start);
        }
        assert!(starts.len() > 50);
    }
}
