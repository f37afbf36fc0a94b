//! Download of the dataset archive, against a local HTTP server on
//! 127.0.0.1 only (never any other network target).
//!
//! Needs the `download` feature (off by default; tests/data_download_skipped.rs
//! says so without it): `cargo test --features download`. The last test runs
//! the cifar10 example's binary, which an unfiltered `cargo test` builds with
//! the same features; with `--test data_download` build it first:
//! `cargo build --features download --example cifar10`.
#![cfg(feature = "download")]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringsgd::data::{cifar, download, synthetic};
use ringsgd::Error;

mod common;
use common::Scratch;

/// One canned answer: status line, body, and the Content-Length to announce.
#[derive(Clone)]
struct Reply {
    status: &'static str,
    body: Vec<u8>,
    content_length: usize,
}

impl Reply {
    fn ok(body: Vec<u8>) -> Self {
        let content_length = body.len();
        Reply {
            status: "200 OK",
            body,
            content_length,
        }
    }
}

/// A tiny HTTP/1.1 server on an ephemeral loopback port. It answers at most
/// `replies.len()` requests, one per connection, in order, and gives up 10
/// seconds after starting; the join handle returns the request paths.
fn serve(replies: Vec<Reply>) -> (String, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut paths = Vec::new();
        let mut replies = replies.into_iter();
        let mut next = replies.next();
        while let Some(reply) = next.take() {
            if Instant::now() > deadline {
                break;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Some(path) = answer(stream, &reply) {
                        paths.push(path);
                    }
                    next = replies.next();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    next = Some(reply);
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept failed: {e}"),
            }
        }
        paths
    });
    (base, handle)
}

fn answer(stream: TcpStream, reply: &Reply) -> Option<String> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 || line == "\r\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1)?.to_string();
    let mut stream = stream;
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: application/gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status, reply.content_length
    );
    // A client that gives up early may close the socket: ignore write errors.
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&reply.body);
    let _ = stream.flush();
    Some(path)
}

fn synthetic_archive(dir: &Path) -> (Vec<u8>, String) {
    let src = dir.join("src.tar.gz");
    synthetic::write_cifar_tar_gz(&src, 3, 4, 21).unwrap();
    let md5 = download::md5_hex_of_file(&src).unwrap();
    (std::fs::read(&src).unwrap(), md5)
}

fn download_error(err: Error) -> (String, String) {
    let shown = err.to_string();
    match err {
        Error::Download { url, msg } => (url, format!("{msg} | {shown}")),
        other => panic!("expected Error::Download, got {other:?}"),
    }
}

#[test]
fn downloads_verifies_caches_and_loads() {
    let s = Scratch::new("download", "ok");
    let (archive, md5) = synthetic_archive(s.path());
    let (base, server) = serve(vec![Reply::ok(archive.clone())]);
    let url = format!("{base}/data/{}", cifar::ARCHIVE_NAME);
    let cache = s.path().join("cache");

    let path = download::fetch_archive(&url, &cache, Some(&md5)).unwrap();
    assert_eq!(path, cache.join(cifar::ARCHIVE_NAME));
    assert_eq!(std::fs::read(&path).unwrap(), archive);
    assert_eq!(
        server.join().unwrap(),
        vec![format!("/data/{}", cifar::ARCHIVE_NAME)]
    );
    // Only the final file is left in the cache.
    let names: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(cifar::ARCHIVE_NAME)]);

    // The server is gone: a second fetch must be served from the cache.
    assert_eq!(
        download::fetch_archive(&url, &cache, Some(&md5)).unwrap(),
        path
    );
    assert_eq!(download::fetch_archive(&url, &cache, None).unwrap(), path);

    let data = cifar::load(&cache).unwrap();
    assert_eq!(data.train, synthetic::generate_split(15, 21, 0));
    assert_eq!(data.test.len(), 4);
}

#[test]
fn stale_cached_file_is_replaced() {
    let s = Scratch::new("download", "stale");
    let (archive, md5) = synthetic_archive(s.path());
    let cache = s.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("c.tar.gz"), b"old partial junk").unwrap();
    let (base, server) = serve(vec![Reply::ok(archive.clone())]);
    let path = download::fetch_archive(&format!("{base}/c.tar.gz"), &cache, Some(&md5)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), archive);
    assert_eq!(server.join().unwrap().len(), 1);
}

#[test]
fn http_404_is_a_clear_error() {
    let s = Scratch::new("download", "404");
    let (base, server) = serve(vec![Reply {
        status: "404 Not Found",
        body: b"nope".to_vec(),
        content_length: 4,
    }]);
    let url = format!("{base}/missing.tar.gz");
    let (got_url, msg) = download_error(download::fetch_archive(&url, s.path(), None).unwrap_err());
    assert_eq!(got_url, url);
    assert!(msg.contains("404"), "{msg}");
    assert!(msg.contains(&url), "{msg}");
    server.join().unwrap();
    assert_eq!(
        std::fs::read_dir(s.path()).unwrap().count(),
        0,
        "nothing cached"
    );
}

#[test]
fn checksum_mismatch_is_rejected_and_not_cached() {
    let s = Scratch::new("download", "md5");
    let (archive, md5) = synthetic_archive(s.path());
    let cache = s.path().join("cache");
    let (base, server) = serve(vec![Reply::ok(archive)]);
    let url = format!("{base}/c.tar.gz");
    let wrong = "0123456789abcdef0123456789abcdef";
    assert_ne!(md5, wrong);
    let (got_url, msg) =
        download_error(download::fetch_archive(&url, &cache, Some(wrong)).unwrap_err());
    assert_eq!(got_url, url);
    assert!(msg.contains("checksum mismatch"), "{msg}");
    assert!(msg.contains(&md5) && msg.contains(wrong), "{msg}");
    server.join().unwrap();
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        0,
        "nothing cached"
    );
}

#[test]
fn short_body_is_rejected() {
    let s = Scratch::new("download", "short");
    let (archive, _) = synthetic_archive(s.path());
    let half = archive[..archive.len() / 2].to_vec();
    let (base, server) = serve(vec![Reply {
        status: "200 OK",
        body: half,
        content_length: archive.len(),
    }]);
    let url = format!("{base}/c.tar.gz");
    let cache = s.path().join("cache");
    let (got_url, msg) = download_error(download::fetch_archive(&url, &cache, None).unwrap_err());
    assert_eq!(got_url, url);
    // Either the HTTP layer notices the early close or the length check does.
    assert!(msg.contains("bytes"), "{msg}");
    server.join().unwrap();
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        0,
        "nothing cached"
    );
}

#[test]
fn refused_connection_and_bad_arguments() {
    let s = Scratch::new("download", "refused");
    // Bind then drop to get a loopback port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/c.tar.gz");
    let (got_url, msg) = download_error(download::fetch_archive(&url, s.path(), None).unwrap_err());
    assert_eq!(got_url, url);
    assert!(msg.to_lowercase().contains("connect"), "{msg}");

    let bad = |url: &str, md5: Option<&str>| {
        matches!(
            download::fetch_archive(url, s.path(), md5),
            Err(Error::InvalidArgument(_))
        )
    };
    assert!(bad("ftp://127.0.0.1/c.tar.gz", None));
    assert!(bad("http://127.0.0.1/", None));
    assert!(bad("http://127.0.0.1/c.tar.gz", Some("xyz")));
}

/// `target/<profile>/examples/cifar10`, built by `cargo test`.
fn cifar10_example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    dir.join("examples").join("cifar10")
}

#[test]
fn cifar10_example_downloads_with_the_flag_and_reuses_the_cache() {
    let s = Scratch::new("download", "example");
    let src = s.path().join("src.tar.gz");
    synthetic::write_cifar_tar_gz(&src, 10, 10, 5).unwrap();
    let (base, server) = serve(vec![Reply::ok(std::fs::read(&src).unwrap())]);
    let url = format!("{base}/{}", cifar::ARCHIVE_NAME);
    let cache = s.path().join("cache");
    let run = || {
        std::process::Command::new("timeout")
            .args(["-k", "5", "120"])
            .arg(cifar10_example())
            .args(["--download", "--download-url", &url, "--cache-dir"])
            .arg(&cache)
            .args(["--model", "conv3x3(4,p1) relu maxpool2 flatten linear(10)"])
            .args(["--epochs", "1", "--global-batch", "10", "--cores", "1"])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let first = run();
    let shown = format!(
        "{}\n{}",
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(first.status.success(), "{shown}");
    assert!(shown.contains("50 train / 10 test images"), "{shown}");
    assert!(shown.contains("test_accuracy="), "{shown}");
    assert_eq!(server.join().unwrap().len(), 1);
    assert!(cache.join(cifar::ARCHIVE_NAME).is_file());
    // The server has stopped: the second run must use the cached archive.
    let second = run();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
}
