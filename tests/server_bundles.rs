//! The bundle store against a real `edgedeploy server`: boto3 (PutObject,
//! GetObject, HeadObject, multipart upload_file, download_file, listings),
//! the crate's own client (ranges, If-Range, conditional requests),
//! hand-made aws-chunked bodies, access rules, refusals, a SIGKILL during an
//! upload, and the server's memory during a 200 MB upload.

mod server_common;

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use edgedeploy::client::{Client, Endpoint, HttpOptions};
use edgedeploy::protocol::sigv4::{self, Credentials, sha256_hex, uri_encode};
use edgedeploy::server::auth::read_shared_credentials;
use edgedeploy::server::bundles;
use server_common::{EDGEDEPLOY, ServerProcess};
use sha2::{Digest, Sha256};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------- helpers

/// A server process this file controls itself: its pid (memory), SIGKILL
/// and restart on the same data directory, environment, TLS.
struct Local {
    child: Child,
    dir: PathBuf,
    endpoint: String,
}

impl Local {
    fn new_dir(name: &str) -> PathBuf {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("edgedeploy-bundles-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Starts a server on `dir/data` with `env` and `extra` arguments.
    fn start(dir: &Path, env: &[(&str, &str)], extra: &[&str]) -> Local {
        let scheme = if extra.contains(&"--tls-cert") { "https" } else { "http" };
        for _ in 0..3 {
            let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
            let log = fs::OpenOptions::new().create(true).append(true).open(dir.join("server.log")).unwrap();
            let mut command = Command::new(EDGEDEPLOY);
            command.arg("server").arg("--data-dir").arg(dir.join("data")).arg("--listen").arg(addr.to_string());
            command.args(extra).envs(env.iter().copied());
            let child = command.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
            let mut local = Local { child, dir: dir.to_path_buf(), endpoint: format!("{scheme}://{addr}") };
            if local.wait_listening(addr) {
                return local;
            }
        }
        panic!("the server did not start:\n{}", fs::read_to_string(dir.join("server.log")).unwrap_or_default());
    }

    fn wait_listening(&mut self, addr: SocketAddr) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn admin(&self) -> Client {
        admin_client(&self.endpoint, &self.data(), None)
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's peak resident set (VmHWM), in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("server log:\n{}", fs::read_to_string(self.dir.join("server.log")).unwrap_or_default());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn client_for(endpoint: &str, id: &str, secret: &str, ca: Option<&Path>) -> Client {
    let endpoint = Endpoint {
        url: endpoint.to_string(),
        region: "us-east-1".into(),
        credentials: Credentials { access_key_id: id.into(), secret_access_key: secret.into() },
    };
    let options = HttpOptions {
        ca_bundle: ca.map(Path::to_path_buf),
        timeout: Some(Duration::from_secs(300)),
        ..HttpOptions::default()
    };
    Client::new(endpoint, &options).unwrap()
}

fn admin_client(endpoint: &str, data_dir: &Path, ca: Option<&Path>) -> Client {
    let (id, secret) = read_shared_credentials(&data_dir.join("admin-credentials")).expect("admin credentials");
    client_for(endpoint, &id, &secret, ca)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

/// An answer: status, headers (lowercase names), body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn from(mut response: ureq::http::Response<ureq::Body>) -> Reply {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let body = response.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap_or_default();
        Reply { status, headers, body }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The `<Code>` of an S3 error document.
    fn code(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let start = text.find("<Code>").map(|i| i + 6).unwrap_or(0);
        let end = text.find("</Code>").unwrap_or(start);
        text[start..end].to_string()
    }
}

/// Sends a request signed by `client` (every header in `headers` signed too).
fn send(
    client: &Client,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: Vec<(String, String)>,
    payload_sha256: &str,
    body: &[u8],
) -> Reply {
    let query: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let signed = client.sign(method, path, &query, headers, payload_sha256, "s3");
    raw(&client.endpoint().url, method, path, &query, &signed, body)
}

/// Sends a request with exactly `headers` (host excluded: ureq sets it).
fn raw(
    base: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    body: &[u8],
) -> Reply {
    let mut url = format!("{base}{}", uri_encode(path, true));
    if !query.is_empty() {
        let q: Vec<String> =
            query.iter().map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false))).collect();
        url = format!("{url}?{}", q.join("&"));
    }
    let agent = agent();
    let request = ureq::http::Request::builder().method(method).uri(&url);
    let request =
        headers.iter().filter(|(n, _)| n != "host").fold(request, |r, (n, v)| r.header(n.as_str(), v.as_str()));
    let response = agent.run(request.body(body.to_vec()).unwrap()).expect("request sent");
    Reply::from(response)
}

fn get(client: &Client, path: &str, headers: &[(&str, &str)]) -> Reply {
    let extra = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    Reply::from(client.s3_request("GET", path, extra, sigv4::UNSIGNED_PAYLOAD).call().unwrap())
}

fn head(client: &Client, path: &str) -> Reply {
    Reply::from(client.s3_request("HEAD", path, Vec::new(), sigv4::UNSIGNED_PAYLOAD).call().unwrap())
}

/// Deterministic pseudo-random bytes, optionally slow.
struct Noise {
    state: u64,
    left: u64,
    delay_every: u64,
    delay: Duration,
    since_delay: u64,
}

impl Noise {
    fn new(seed: u64, len: u64) -> Noise {
        Noise { state: seed | 1, left: len, delay_every: u64::MAX, delay: Duration::ZERO, since_delay: 0 }
    }

    fn slow(mut self, every: u64, delay: Duration) -> Noise {
        self.delay_every = every;
        self.delay = delay;
        self
    }
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX)).min(64 * 1024);
        for b in &mut buf[..n] {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *b = self.state as u8;
        }
        self.left -= n as u64;
        self.since_delay += n as u64;
        if self.since_delay >= self.delay_every {
            self.since_delay = 0;
            std::thread::sleep(self.delay);
        }
        Ok(n)
    }
}

fn noise_sha256(seed: u64, len: u64) -> String {
    let mut hasher = Sha256::new();
    let mut noise = Noise::new(seed, len);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = noise.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    sigv4::hex(&hasher.finalize())
}

/// Files in `DATA_DIR/objects` (not the uploads directory).
fn object_files(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(data_dir.join("objects"))
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|n| n != "uploads");
    names.sort();
    names
}

/// Every file under `DATA_DIR/objects/uploads`.
fn upload_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![data_dir.join("objects/uploads")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- boto3

#[test]
fn boto3_objects_multipart_and_listings() {
    let server = ServerProcess::start();
    let out = server.boto3_ok(
        r#"
        import hashlib, tempfile, urllib.request
        scratch = tempfile.mkdtemp()
        os.chdir(scratch)
        s3 = client("s3", s3={"addressing_style": "path"})
        s3.create_bucket(Bucket="bundles")
        s3.head_bucket(Bucket="bundles")
        body = b"hello bundle store\n" * 100
        put = s3.put_object(Bucket="bundles", Key="app/v1 rev+1.tgz", Body=body)
        assert put["ETag"] == '"%s"' % hashlib.md5(body).hexdigest(), put
        got = s3.get_object(Bucket="bundles", Key="app/v1 rev+1.tgz")
        assert got["Body"].read() == body
        assert got["ContentLength"] == len(body) and got["ETag"] == put["ETag"]
        assert got["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
        assert got["AcceptRanges"] == "bytes" and got["ContentType"] == "application/octet-stream"
        h = s3.head_object(Bucket="bundles", Key="app/v1 rev+1.tgz")
        assert h["ContentLength"] == len(body) and h["ETag"] == put["ETag"]
        part = s3.get_object(Bucket="bundles", Key="app/v1 rev+1.tgz", Range="bytes=6-11")
        assert part["Body"].read() == b"bundle" and part["ContentRange"] == "bytes 6-11/%d" % len(body)

        # upload_file above 8 MB is a multipart upload; download_file uses ranged GETs.
        big = os.urandom(20 * 1024 * 1024 + 12345)
        open("big.bin", "wb").write(big)
        s3.upload_file("big.bin", "bundles", "app/big.bin")
        h = s3.head_object(Bucket="bundles", Key="app/big.bin")
        assert h["ContentLength"] == len(big)
        parts = [big[i:i + 8 * 1024 * 1024] for i in range(0, len(big), 8 * 1024 * 1024)]
        md5s = b"".join(hashlib.md5(p).digest() for p in parts)
        assert h["ETag"] == '"%s-%d"' % (hashlib.md5(md5s).hexdigest(), len(parts)), h["ETag"]
        assert h["Metadata"]["sha256"] == hashlib.sha256(big).hexdigest()
        s3.download_file("bundles", "app/big.bin", "big.out")
        assert open("big.out", "rb").read() == big
        os.remove("big.bin"); os.remove("big.out"); os.chdir("/"); os.rmdir(scratch)

        # Errors.
        assert error_of(s3.get_object, Bucket="bundles", Key="missing")[:2] == ["NoSuchKey", 404]
        assert error_of(s3.head_object, Bucket="bundles", Key="missing")[:2] == ["404", 404]
        assert error_of(s3.get_object, Bucket="bundles", Key="app/big.bin", Range="bytes=999999999-")[:2] == ["InvalidRange", 416]
        assert error_of(s3.get_object, Bucket="bundles", Key="app/big.bin", IfMatch='"nope"')[:2] == ["PreconditionFailed", 412]
        assert error_of(s3.put_object, Bucket="bundles", Key="x", Body=b"abc", ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")[0] == "BadDigest"
        assert error_of(s3.put_object, Bucket="bundles", Key="app/big.bin", Body=b"abc", IfNoneMatch="*")[:2] == ["PreconditionFailed", 412]
        assert error_of(s3.put_object, Bucket="Bad_Bucket", Key="x", Body=b"abc")[0] == "InvalidBucketName"
        assert error_of(s3.copy_object, Bucket="bundles", Key="y", CopySource="bundles/x")[:2] == ["NotImplemented", 501]

        # Listings: pagination, delimiter, prefixes.
        for i in range(5):
            s3.put_object(Bucket="bundles", Key="list/k%d" % i, Body=b"x")
        s3.put_object(Bucket="bundles", Key="list/sub/a", Body=b"x")
        s3.put_object(Bucket="bundles", Key="list/sub/b", Body=b"x")
        keys, token = [], None
        while True:
            kw = dict(ContinuationToken=token) if token else {}
            page = s3.list_objects_v2(Bucket="bundles", Prefix="list/", MaxKeys=2, **kw)
            keys += [o["Key"] for o in page.get("Contents", [])]
            if not page["IsTruncated"]:
                break
            token = page["NextContinuationToken"]
        assert keys == ["list/k%d" % i for i in range(5)] + ["list/sub/a", "list/sub/b"], keys
        page = s3.list_objects_v2(Bucket="bundles", Prefix="list/", Delimiter="/")
        assert [o["Key"] for o in page["Contents"]] == ["list/k%d" % i for i in range(5)]
        assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["list/sub/"]
        assert page["KeyCount"] == 6
        top = s3.list_objects_v2(Bucket="bundles", Delimiter="/")
        assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["app/", "list/"]
        v1 = s3.list_objects(Bucket="bundles", Prefix="list/k")
        assert [o["Key"] for o in v1["Contents"]] == ["list/k%d" % i for i in range(5)]
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["bundles"]
        deleted = s3.delete_objects(Bucket="bundles", Delete={"Objects": [{"Key": "list/k%d" % i} for i in range(5)]})
        assert len(deleted["Deleted"]) == 5
        s3.delete_object(Bucket="bundles", Key="list/sub/a")
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="bundles", Prefix="list/")["Contents"]] == ["list/sub/b"]
        assert error_of(s3.delete_bucket, Bucket="bundles")[:2] == ["BucketNotEmpty", 409]

        # A presigned URL (SigV4) works with a plain HTTP client; SigV2 (botocore's
        # default for presigning in us-east-1) is refused with a hint.
        legacy = s3.generate_presigned_url("get_object", Params={"Bucket": "bundles", "Key": "x"})
        try:
            urllib.request.urlopen(legacy)
            raise AssertionError("a SigV2 presigned URL worked")
        except urllib.error.HTTPError as e:
            assert e.code == 400 and b"s3v4" in e.read()
        s3v4 = client("s3", signature_version="s3v4")
        url = s3v4.generate_presigned_url("get_object", Params={"Bucket": "bundles", "Key": "app/v1 rev+1.tgz"}, ExpiresIn=60)
        assert urllib.request.urlopen(url).read() == body
        try:
            urllib.request.urlopen(url.replace("X-Amz-Signature=", "X-Amz-Signature=0"))
            raise AssertionError("a tampered presigned URL worked")
        except urllib.error.HTTPError as e:
            assert e.code == 403

        # An aborted multipart upload leaves nothing behind.
        up = s3.create_multipart_upload(Bucket="bundles", Key="aborted")
        s3.upload_part(Bucket="bundles", Key="aborted", UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 1000)
        s3.abort_multipart_upload(Bucket="bundles", Key="aborted", UploadId=up["UploadId"])
        assert error_of(s3.upload_part, Bucket="bundles", Key="aborted", UploadId=up["UploadId"], PartNumber=1, Body=b"x")[:2] == ["NoSuchUpload", 404]
        # Parts but the last must be 5 MiB or more, as on S3.
        up = s3.create_multipart_upload(Bucket="bundles", Key="small-parts")
        e1 = s3.upload_part(Bucket="bundles", Key="small-parts", UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 1000)["ETag"]
        e2 = s3.upload_part(Bucket="bundles", Key="small-parts", UploadId=up["UploadId"], PartNumber=2, Body=b"y")["ETag"]
        parts = {"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]}
        assert error_of(s3.complete_multipart_upload, Bucket="bundles", Key="small-parts", UploadId=up["UploadId"], MultipartUpload=parts)[0] == "EntityTooSmall"
        bad = {"Parts": [{"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}]}
        assert error_of(s3.complete_multipart_upload, Bucket="bundles", Key="small-parts", UploadId=up["UploadId"], MultipartUpload=bad)[0] == "InvalidPart"
        single = {"Parts": [{"PartNumber": 1, "ETag": e1}]}
        s3.complete_multipart_upload(Bucket="bundles", Key="small-parts", UploadId=up["UploadId"], MultipartUpload=single)
        assert s3.get_object(Bucket="bundles", Key="small-parts")["Body"].read() == b"x" * 1000
        emit("ok")
        "#,
    );
    assert_eq!(out, "ok");
    // Nothing left over: one file per object, no temp files, no uploads.
    let names = object_files(server.data_dir());
    assert!(names.iter().all(|n| n.starts_with("o-")), "{names:?}");
    assert_eq!(names.len(), 4, "{names:?}"); // v1 rev+1, big.bin, list/sub/b, small-parts
    assert!(upload_files(server.data_dir()).is_empty(), "{:?}", upload_files(server.data_dir()));
}

/// Over https botocore streams uploads as aws-chunked with a trailing
/// checksum (STREAMING-UNSIGNED-PAYLOAD-TRAILER), PutObject and UploadPart.
#[test]
fn boto3_over_tls_sends_aws_chunked_bodies() {
    let dir = Local::new_dir("tls");
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output();
    if !made.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: openssl is not available to make a test certificate");
        return;
    }
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let server = Local::start(&dir, &[], &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let script = format!(
        r#"
import boto3, botocore.config, hashlib, json, os
s3 = boto3.client("s3", endpoint_url="{endpoint}", region_name="us-east-1", verify="{cert}",
                  config=botocore.config.Config(retries={{"total_max_attempts": 1}}))
seen = []
s3.meta.events.register("before-send.s3", lambda request, **kw: seen.append(
    (request.headers.get("x-amz-content-sha256", b"").decode() if isinstance(request.headers.get("x-amz-content-sha256"), bytes)
     else request.headers.get("x-amz-content-sha256"))))
body = os.urandom(300000)
s3.put_object(Bucket="tls", Key="small", Body=body)
assert s3.get_object(Bucket="tls", Key="small")["Body"].read() == body
big = os.urandom(17 * 1024 * 1024)
open("{dir}/big", "wb").write(big)
s3.upload_file("{dir}/big", "tls", "big")
s3.download_file("tls", "big", "{dir}/big.out")
assert open("{dir}/big.out", "rb").read() == big
print(json.dumps(seen))
"#,
        endpoint = server.endpoint,
        cert = cert.display(),
        dir = dir.display(),
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("AWS_SHARED_CREDENTIALS_FILE", server.data().join("admin-credentials"))
        .env("AWS_CONFIG_FILE", dir.join("no-config"))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: Vec<Option<String>> =
        serde_json::from_slice(String::from_utf8_lossy(&out.stdout).trim().as_bytes()).unwrap();
    let streaming = seen.iter().flatten().filter(|s| s.as_str() == "STREAMING-UNSIGNED-PAYLOAD-TRAILER").count();
    // One PutObject and three UploadParts.
    assert!(streaming >= 4, "payload hashes sent: {seen:?}");
}

// ---------------------------------------------------------------- our client

#[test]
fn rust_client_ranges_if_range_and_conditions() {
    let server = ServerProcess::start();
    let client = admin_client(server.endpoint(), server.data_dir(), None);
    let content: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let etag = client.s3_put("/rev/app.tgz", &content[..], 1000, &sha256_hex(&content)).unwrap();
    assert_eq!(etag, format!("\"{}\"", md5_hex(&content)));
    let whole = get(&client, "/rev/app.tgz", &[]);
    assert_eq!((whole.status, whole.body.as_slice()), (200, &content[..]));
    let last_modified = whole.header("last-modified").unwrap().to_string();
    assert_eq!(whole.header("content-length"), Some("1000"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.header("x-amz-meta-sha256"), Some(sha256_hex(&content).as_str()));

    for (range, from, to) in
        [("bytes=10-19", 10, 19), ("bytes=990-", 990, 999), ("bytes=-5", 995, 999), ("bytes=995-5000", 995, 999)]
    {
        let r = get(&client, "/rev/app.tgz", &[("range", range)]);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.body, &content[from..=to], "{range}");
        assert_eq!(r.header("content-range"), Some(format!("bytes {from}-{to}/1000").as_str()), "{range}");
        assert_eq!(r.header("content-length"), Some((to - from + 1).to_string().as_str()));
    }
    // If-Range: the range only while the object is the one we started with.
    let resumed = get(&client, "/rev/app.tgz", &[("range", "bytes=500-"), ("if-range", &etag)]);
    assert_eq!((resumed.status, resumed.body.as_slice()), (206, &content[500..]));
    let by_date = get(&client, "/rev/app.tgz", &[("range", "bytes=500-"), ("if-range", &last_modified)]);
    assert_eq!(by_date.status, 206);
    let changed = get(&client, "/rev/app.tgz", &[("range", "bytes=500-"), ("if-range", "\"0123\"")]);
    assert_eq!((changed.status, changed.body.as_slice()), (200, &content[..]));
    assert_eq!(changed.header("content-range"), None);
    // Unsatisfiable.
    let beyond = get(&client, "/rev/app.tgz", &[("range", "bytes=1000-")]);
    assert_eq!((beyond.status, beyond.code().as_str()), (416, "InvalidRange"));
    assert_eq!(beyond.header("content-range"), Some("bytes */1000"));
    // Conditions.
    assert_eq!(get(&client, "/rev/app.tgz", &[("if-none-match", &etag)]).status, 304);
    assert_eq!(get(&client, "/rev/app.tgz", &[("if-match", &etag)]).status, 200);
    let failed = get(&client, "/rev/app.tgz", &[("if-match", "\"other\"")]);
    assert_eq!((failed.status, failed.code().as_str()), (412, "PreconditionFailed"));
    assert_eq!(get(&client, "/rev/app.tgz", &[("if-modified-since", &last_modified)]).status, 304);
    // HEAD: the same headers, no body; errors without a body.
    let h = head(&client, "/rev/app.tgz");
    assert_eq!((h.status, h.header("content-length"), h.header("etag")), (200, Some("1000"), Some(etag.as_str())));
    let missing = head(&client, "/rev/none");
    assert_eq!((missing.status, missing.body.len()), (404, 0));
    let missing = get(&client, "/rev/none", &[]);
    assert_eq!((missing.status, missing.code().as_str()), (404, "NoSuchKey"));
    assert!(String::from_utf8_lossy(&missing.body).contains("<Resource>/rev/none</Resource>"));
    // Overwrite, then delete.
    client.s3_put("/rev/app.tgz", &b"v2"[..], 2, &sha256_hex(b"v2")).unwrap();
    assert_eq!(get(&client, "/rev/app.tgz", &[]).body, b"v2");
    assert_eq!(object_files(server.data_dir()).len(), 1);
    let deleted =
        Reply::from(client.s3_request("DELETE", "/rev/app.tgz", Vec::new(), &sha256_hex(b"")).call().unwrap());
    assert_eq!(deleted.status, 204);
    assert_eq!(head(&client, "/rev/app.tgz").status, 404);
    assert!(object_files(server.data_dir()).is_empty());
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest as _;
    sigv4::hex(&md5::Md5::digest(bytes))
}

// ---------------------------------------------------------------- access

#[test]
fn instance_keys_may_only_get_and_head() {
    let server = ServerProcess::start();
    let admin = admin_client(server.endpoint(), server.data_dir(), None);
    admin.s3_put("/bundles/app.tgz", &b"bundle"[..], 6, &sha256_hex(b"bundle")).unwrap();
    let config = server.work_dir().join("agent.yml");
    let out = server.edgedeploy(&[
        "register-instance",
        "--data-dir",
        server.data_dir().to_str().unwrap(),
        "--name",
        "device-1",
        "--agent-config",
        config.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml: serde_yaml::Value = serde_yaml::from_str(&fs::read_to_string(&config).unwrap()).unwrap();
    let id = yaml["aws_access_key_id"].as_str().unwrap();
    let secret = yaml["aws_secret_access_key"].as_str().unwrap();
    let device = client_for(server.endpoint(), id, secret, None);
    let got = get(&device, "/bundles/app.tgz", &[("range", "bytes=0-2")]);
    assert_eq!((got.status, got.body.as_slice()), (206, &b"bun"[..]));
    assert_eq!(head(&device, "/bundles/app.tgz").status, 200);
    let put = device.s3_put("/bundles/app.tgz", &b"evil"[..], 4, &sha256_hex(b"evil")).unwrap_err();
    assert_eq!(put.exception(), Some("AccessDenied"), "{put}");
    let delete =
        Reply::from(device.s3_request("DELETE", "/bundles/app.tgz", Vec::new(), &sha256_hex(b"")).call().unwrap());
    assert_eq!((delete.status, delete.code().as_str()), (403, "AccessDenied"));
    let list = send(&device, "GET", "/bundles", &[("list-type", "2")], Vec::new(), &sha256_hex(b""), b"");
    assert_eq!((list.status, list.code().as_str()), (403, "AccessDenied"));
    let upload = send(&device, "POST", "/bundles/x", &[("uploads", "")], Vec::new(), &sha256_hex(b""), b"");
    assert_eq!((upload.status, upload.code().as_str()), (403, "AccessDenied"));
    assert_eq!(get(&admin, "/bundles/app.tgz", &[]).body, b"bundle");
}

#[test]
fn unsigned_forged_skewed_and_mismatched_requests_are_refused() {
    let server = ServerProcess::start();
    let admin = admin_client(server.endpoint(), server.data_dir(), None);
    admin.s3_put("/bk1/k", &b"data"[..], 4, &sha256_hex(b"data")).unwrap();
    let base = server.endpoint();

    let anonymous = raw(base, "GET", "/bk1/k", &[], &[], b"");
    assert_eq!((anonymous.status, anonymous.code().as_str()), (403, "AccessDenied"));
    let anonymous_head = raw(base, "HEAD", "/bk1/k", &[], &[], b"");
    assert_eq!((anonymous_head.status, anonymous_head.body.len()), (403, 0));

    let (id, _) = read_shared_credentials(&server.admin_credentials_file()).unwrap();
    let forged = client_for(base, &id, "not-the-secret-not-the-secret-not-the-se", None);
    let r = get(&forged, "/bk1/k", &[]);
    assert_eq!((r.status, r.code().as_str()), (403, "SignatureDoesNotMatch"));
    let unknown = client_for(base, "AKIAUNKNOWNUNKNOWN00", "secret", None);
    let r = get(&unknown, "/bk1/k", &[]);
    assert_eq!((r.status, r.code().as_str()), (403, "InvalidAccessKeyId"));

    // A correct signature made 20 minutes ago.
    let creds = read_shared_credentials(&server.admin_credentials_file()).unwrap();
    let creds = Credentials { access_key_id: creds.0, secret_access_key: creds.1 };
    let old = edgedeploy::clock::amz_date(edgedeploy::clock::now_epoch().0 - 1200);
    let host = base.trim_start_matches("http://").to_string();
    let empty = sha256_hex(b"");
    let mut headers = vec![
        ("host".to_string(), host),
        ("x-amz-date".to_string(), old.clone()),
        ("x-amz-content-sha256".to_string(), empty.clone()),
    ];
    let request = sigv4::Request {
        method: "GET",
        path: "/bk1/k",
        query: &[],
        headers: &headers,
        payload_sha256: &empty,
        service: "s3",
    };
    let authorization = sigv4::authorization(&creds, &old, "us-east-1", &request);
    headers.push(("authorization".to_string(), authorization));
    let r = raw(base, "GET", "/bk1/k", &[], &headers, b"");
    assert_eq!((r.status, r.code().as_str()), (403, "RequestTimeTooSkewed"));

    // The body does not match the signed x-amz-content-sha256: refused, nothing stored.
    let before = object_files(server.data_dir());
    let err = admin.s3_put("/bk1/new", &b"other bytes"[..], 11, &sha256_hex(b"the signed bytes")).unwrap_err();
    assert_eq!(err.exception(), Some("XAmzContentSHA256Mismatch"), "{err}");
    assert_eq!(head(&admin, "/bk1/new").status, 404);
    let err = admin.s3_put("/bk1/k", &b"other"[..], 5, &sha256_hex(b"the signed bytes")).unwrap_err();
    assert_eq!(err.exception(), Some("XAmzContentSHA256Mismatch"));
    assert_eq!(get(&admin, "/bk1/k", &[]).body, b"data");
    assert_eq!(object_files(server.data_dir()), before);
    // Content-MD5 that does not match.
    let r = send(
        &admin,
        "PUT",
        "/bk1/md5",
        &[],
        vec![("content-md5".into(), "1B2M2Y8AsgTpgAmY7PhCfg==".into())],
        sigv4::UNSIGNED_PAYLOAD,
        b"not empty",
    );
    assert_eq!((r.status, r.code().as_str()), (400, "BadDigest"));
    assert_eq!(object_files(server.data_dir()), before);
}

// ---------------------------------------------------------------- aws-chunked

fn chunked_body(pieces: &[&[u8]], trailer: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = Vec::new();
    for piece in pieces {
        body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        body.extend_from_slice(piece);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n");
    if let Some((name, value)) = trailer {
        body.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
    }
    body.extend_from_slice(b"\r\n");
    body
}

fn crc32_b64(bytes: &[u8]) -> String {
    use base64::Engine;
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(bytes);
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

#[test]
fn aws_chunked_bodies_are_decoded_and_checked() {
    let server = ServerProcess::start();
    let admin = admin_client(server.endpoint(), server.data_dir(), None);
    let data = b"hello, chunked world! ".repeat(5000);
    let pieces: Vec<&[u8]> = data.chunks(65536).collect();
    let headers = |decoded: usize| {
        vec![
            ("content-encoding".to_string(), "aws-chunked".to_string()),
            ("x-amz-decoded-content-length".to_string(), decoded.to_string()),
            ("x-amz-trailer".to_string(), "x-amz-checksum-crc32".to_string()),
            ("x-amz-sdk-checksum-algorithm".to_string(), "CRC32".to_string()),
        ]
    };
    // Unsigned chunks with a trailing CRC32, as botocore sends over https.
    let body = chunked_body(&pieces, Some(("x-amz-checksum-crc32", &crc32_b64(&data))));
    let r = send(&admin, "PUT", "/chunked/ok", &[], headers(data.len()), "STREAMING-UNSIGNED-PAYLOAD-TRAILER", &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-amz-checksum-crc32"), Some(crc32_b64(&data).as_str()));
    assert_eq!(get(&admin, "/chunked/ok", &[]).body, data);
    // A wrong trailing checksum.
    let body = chunked_body(&pieces, Some(("x-amz-checksum-crc32", &crc32_b64(b"something else"))));
    let r = send(&admin, "PUT", "/chunked/bad", &[], headers(data.len()), "STREAMING-UNSIGNED-PAYLOAD-TRAILER", &body);
    assert_eq!((r.status, r.code().as_str()), (400, "BadDigest"));
    // A body shorter than x-amz-decoded-content-length.
    let body = chunked_body(&pieces[..1], Some(("x-amz-checksum-crc32", &crc32_b64(&data[..65536]))));
    let r =
        send(&admin, "PUT", "/chunked/short", &[], headers(data.len()), "STREAMING-UNSIGNED-PAYLOAD-TRAILER", &body);
    assert_eq!((r.status, r.code().as_str()), (400, "IncompleteBody"));
    // The trailer announced by x-amz-trailer is missing.
    let body = chunked_body(&pieces, None);
    let r = send(&admin, "PUT", "/chunked/none", &[], headers(data.len()), "STREAMING-UNSIGNED-PAYLOAD-TRAILER", &body);
    assert_eq!((r.status, r.code().as_str()), (400, "InvalidRequest"));
    assert_eq!(head(&admin, "/chunked/none").status, 404);
    assert_eq!(head(&admin, "/chunked/bad").status, 404);
    assert_eq!(head(&admin, "/chunked/short").status, 404);

    // Signed chunks (STREAMING-AWS4-HMAC-SHA256-PAYLOAD), as the Java and Go SDKs send over http.
    let (id, secret) = read_shared_credentials(&server.admin_credentials_file()).unwrap();
    let signed_put = |tamper: bool| {
        let extra = vec![
            ("content-encoding".to_string(), "aws-chunked".to_string()),
            ("x-amz-decoded-content-length".to_string(), data.len().to_string()),
        ];
        let signed = admin.sign("PUT", "/chunked/signed", &[], extra, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "s3");
        let authorization = &signed.iter().find(|(n, _)| n == "authorization").unwrap().1;
        let amz_date = &signed.iter().find(|(n, _)| n == "x-amz-date").unwrap().1;
        let seed = authorization.rsplit("Signature=").next().unwrap().to_string();
        let key = bundles::signing_key(&secret, &amz_date[..8], "us-east-1", "s3");
        let scope = format!("{}/us-east-1/s3/aws4_request", &amz_date[..8]);
        let mut previous = seed;
        let mut body = Vec::new();
        for piece in pieces.iter().copied().chain([&b""[..]]) {
            let sig = bundles::chunk_signature(&key, amz_date, &scope, &previous, piece);
            body.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", piece.len()).as_bytes());
            body.extend_from_slice(piece);
            body.extend_from_slice(b"\r\n");
            previous = sig;
        }
        if tamper {
            body[100] ^= 1;
        }
        raw(server.endpoint(), "PUT", "/chunked/signed", &[], &signed, &body)
    };
    let _ = id;
    let r = signed_put(true);
    assert_eq!((r.status, r.code().as_str()), (403, "SignatureDoesNotMatch"));
    assert_eq!(head(&admin, "/chunked/signed").status, 404);
    let r = signed_put(false);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(get(&admin, "/chunked/signed", &[]).body, data);
    assert_eq!(object_files(server.data_dir()).len(), 2);
}

// ---------------------------------------------------------------- limits, crashes, memory

/// Sends the head of a signed PUT with `Expect: 100-continue` and returns
/// the answer, read before any byte of the body is sent.
fn put_expecting_continue(client: &Client, path: &str, len: u64) -> String {
    use std::io::Write;
    let headers = vec![("content-length".to_string(), len.to_string()), ("expect".to_string(), "100-continue".into())];
    let signed = client.sign("PUT", path, &[], headers, sigv4::UNSIGNED_PAYLOAD, "s3");
    let addr = client.endpoint().url.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("PUT {} HTTP/1.1\r\n", uri_encode(path, true));
    for (name, value) in &signed {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        answer.extend_from_slice(&buf[..n]);
        if n == 0 || String::from_utf8_lossy(&answer).contains("</Error>") {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn the_size_limit_is_enforced() {
    let dir = Local::new_dir("limit");
    let server = Local::start(&dir, &[(bundles::MAX_OBJECT_SIZE_ENV, "1M")], &[]);
    let admin = server.admin();
    // A declared length over the limit is refused before the body is sent
    // (SDKs send `Expect: 100-continue` for uploads).
    let answer = put_expecting_continue(&admin, "/lim/big", 2 << 20);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("<Code>EntityTooLarge</Code>"), "{answer}");
    let big = vec![7u8; (1 << 20) + 1];
    // Without a declared length (aws-chunked, no x-amz-decoded-content-length) it is cut off while streaming.
    let body = chunked_body(&[&big[..]], None);
    let r = send(
        &admin,
        "PUT",
        "/lim/chunked",
        &[],
        vec![("content-encoding".into(), "aws-chunked".into())],
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        &body,
    );
    assert_eq!((r.status, r.code().as_str()), (400, "EntityTooLarge"));
    let ok = vec![7u8; 1 << 20];
    admin.s3_put("/lim/ok", &ok[..], ok.len() as u64, &sha256_hex(&ok)).unwrap();
    assert_eq!(object_files(&server.data()).len(), 1);
}

#[test]
fn a_server_killed_during_uploads_keeps_the_old_object_and_no_leftovers() {
    let dir = Local::new_dir("kill");
    let mut server = Local::start(&dir, &[], &[]);
    let admin = server.admin();
    admin.s3_put("/crash/existing", &b"version 1"[..], 9, &sha256_hex(b"version 1")).unwrap();
    let upload_id = {
        let r = send(&admin, "POST", "/crash/multi", &[("uploads", "")], Vec::new(), &sha256_hex(b""), b"");
        let text = String::from_utf8(r.body).unwrap();
        let start = text.find("<UploadId>").unwrap() + 10;
        text[start..start + 32].to_string()
    };
    // Three slow uploads: a new object, an overwrite, a multipart part.
    let len: u64 = 64 << 20;
    let mut threads = Vec::new();
    for path in ["/crash/new", "/crash/existing"] {
        let client = server.admin();
        threads.push(std::thread::spawn(move || {
            let body = Noise::new(3, len).slow(256 << 10, Duration::from_millis(20));
            client.s3_put(path, body, len, sigv4::UNSIGNED_PAYLOAD)
        }));
    }
    {
        let client = server.admin();
        let upload_id = upload_id.clone();
        threads.push(std::thread::spawn(move || {
            let query: Vec<(String, String)> =
                vec![("partNumber".into(), "1".into()), ("uploadId".into(), upload_id.clone())];
            let headers = vec![("content-length".to_string(), len.to_string())];
            let signed = client.sign("PUT", "/crash/multi", &query, headers, sigv4::UNSIGNED_PAYLOAD, "s3");
            let url = format!("{}/crash/multi?partNumber=1&uploadId={upload_id}", client.endpoint().url);
            let mut request = agent().put(url);
            for (n, v) in signed.iter().filter(|(n, _)| n != "host") {
                request = request.header(n.as_str(), v.as_str());
            }
            let mut body = Noise::new(4, len).slow(256 << 10, Duration::from_millis(20));
            request
                .send(ureq::SendBody::from_reader(&mut body))
                .map(|_| String::new())
                .map_err(|e| edgedeploy::client::CallError::Unreachable(e.to_string()))
        }));
    }
    let data = server.data();
    let temp_size = |path: PathBuf| fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    wait_for("three temp files with data", || {
        let top =
            object_files(&data).into_iter().filter(|n| n.starts_with("tmp-")).map(|n| data.join("objects").join(n));
        let parts =
            upload_files(&data).into_iter().filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("tmp-"));
        top.chain(parts).filter(|p| temp_size(p.clone()) > 1 << 20).count() == 3
    });
    server.kill9();
    for thread in threads {
        assert!(thread.join().unwrap().is_err(), "an upload finished although the server was killed");
    }
    assert!(object_files(&data).iter().any(|n| n.starts_with("tmp-")));

    let server = Local::start(&dir, &[], &[]);
    let admin = server.admin();
    assert_eq!(head(&admin, "/crash/new").status, 404);
    assert_eq!(get(&admin, "/crash/existing", &[]).body, b"version 1");
    let names = object_files(&data);
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("o-"));
    // The multipart upload survives (S3 keeps it until aborted), its partial part does not.
    let left = upload_files(&data);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with("upload.json"));
    let part = send(
        &admin,
        "PUT",
        "/crash/multi",
        &[("partNumber", "1"), ("uploadId", &upload_id)],
        Vec::new(),
        &sha256_hex(b"part"),
        b"part",
    );
    assert_eq!(part.status, 200);
    let doc = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
        part.header("etag").unwrap()
    );
    let done = send(
        &admin,
        "POST",
        "/crash/multi",
        &[("uploadId", &upload_id)],
        Vec::new(),
        &sha256_hex(doc.as_bytes()),
        doc.as_bytes(),
    );
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    assert_eq!(get(&admin, "/crash/multi", &[]).body, b"part");
    assert!(upload_files(&data).is_empty());
}

#[test]
fn server_memory_does_not_grow_with_a_200_mb_upload() {
    let dir = Local::new_dir("memory");
    let server = Local::start(&dir, &[], &[]);
    let admin = server.admin();
    // Warm up every path once (allocator arenas, pools, first-use statics).
    let small = Noise::new(1, 4 << 20);
    admin.s3_put("/mem/warm", small, 4 << 20, sigv4::UNSIGNED_PAYLOAD).unwrap();
    let mut warm = admin.s3_request("GET", "/mem/warm", Vec::new(), sigv4::UNSIGNED_PAYLOAD).call().unwrap();
    std::io::copy(&mut warm.body_mut().as_reader(), &mut std::io::sink()).unwrap();
    let before = server.peak_rss_kib();

    let len: u64 = 200 << 20;
    let sha = noise_sha256(9, len);
    admin.s3_put("/mem/big", Noise::new(9, len), len, &sha).unwrap();
    let mut response = admin.s3_request("GET", "/mem/big", Vec::new(), sigv4::UNSIGNED_PAYLOAD).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut hasher = Sha256::new();
    let mut reader = response.body_mut().with_config().limit(len + 1).reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    assert_eq!((total, sigv4::hex(&hasher.finalize())), (len, sha));
    let after = server.peak_rss_kib();
    let growth_mib = after.saturating_sub(before) / 1024;
    eprintln!("server VmHWM: {} MiB before, {} MiB after", before / 1024, after / 1024);
    assert!(growth_mib < 50, "the server's peak RSS grew by {growth_mib} MiB for a 200 MB upload + download");
}
