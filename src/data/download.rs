//! Opt-in download of the CIFAR-10 archive to a cache folder.
//!
//! # Policy
//!
//! Nothing in `ringsgd` touches the network unless asked: the training
//! example downloads only when given `--download`, and library code calls
//! [`fetch_archive`] only when the caller does. The archive goes to a cache
//! folder of the caller's choice and is reused on later runs; pass the
//! cache folder (or the archive in it) to [`cifar::load`](super::cifar::load).
//!
//! # How
//!
//! * The body is streamed to a hidden temporary file in the cache folder
//!   (`.<name>.part-<pid>`), flushed to disk, and renamed to its final name
//!   only after the length and the checksum check out, so the cache never
//!   holds a partial archive.
//! * An archive already in the cache is reused without any network access
//!   (after a checksum check when one is given; a mismatching cached file is
//!   replaced by a fresh download).
//! * `http://` and `https://` URLs are accepted (HTTPS through rustls with
//!   the Mozilla root certificates; `http://` is meant for local mirrors and
//!   tests). Proxy settings come from the usual environment variables,
//!   except for loopback hosts, which are always reached directly.
//! * Errors are [`Error::Download`] naming the URL: HTTP status, connection
//!   refused, time-outs, a short body, a checksum mismatch.
//!
//! Requires the `download` cargo feature (off by default) for the network
//! part; without it, a cached archive is still found and checked, and a
//! download attempt returns an error saying how to enable it.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::{Error, Result};

/// The official CIFAR-10 binary archive.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// MD5 of [`CIFAR10_URL`] as published on the CIFAR-10 page.
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// Largest body accepted (the official archive is 163 MiB).
pub const MAX_DOWNLOAD_BYTES: u64 = 1 << 30;

/// Downloads the official CIFAR-10 archive into `cache_dir` (or reuses it)
/// and checks its published MD5; returns the archive path.
pub fn fetch_cifar10(cache_dir: &Path) -> Result<PathBuf> {
    fetch_archive(CIFAR10_URL, cache_dir, Some(CIFAR10_MD5))
}

/// Downloads `url` into `cache_dir` under the last segment of the URL path
/// (or reuses a file of that name already there), verifying
/// `expected_md5` (32 hex digits) when given; returns the file's path.
///
/// See the [module docs](self) for the policy. Errors: an invalid URL or
/// checksum argument ([`Error::InvalidArgument`]), cache-folder I/O
/// ([`Error::Io`]), and network, HTTP or checksum failures
/// ([`Error::Download`] naming the URL).
pub fn fetch_archive(url: &str, cache_dir: &Path, expected_md5: Option<&str>) -> Result<PathBuf> {
    let name = file_name_of(url)?;
    let expected = expected_md5.map(parse_md5).transpose()?;
    std::fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
    let dest = cache_dir.join(&name);

    if dest.is_file() {
        match &expected {
            None => {
                log::info!("using cached {} (no checksum given)", dest.display());
                return Ok(dest);
            }
            Some(want) => {
                let got = md5_of_file(&dest)?;
                if &got == want {
                    log::info!("using cached {} (MD5 ok)", dest.display());
                    return Ok(dest);
                }
                log::warn!(
                    "cached {} has MD5 {} but {} is expected; downloading it again",
                    dest.display(),
                    hex(&got),
                    hex(want)
                );
            }
        }
    }

    let tmp = cache_dir.join(format!(".{name}.part-{}", std::process::id()));
    let result = download_to(url, &tmp, expected.as_ref());
    match result {
        Ok(()) => {
            std::fs::rename(&tmp, &dest).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                Error::io(&dest, e)
            })?;
            if let Ok(dir) = File::open(cache_dir) {
                let _ = dir.sync_all();
            }
            log::info!("downloaded {url} to {}", dest.display());
            Ok(dest)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// The cache file name for `url`: the last path segment, which must be a
/// plain file name.
fn file_name_of(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            Error::invalid(format!(
                "download URL {url:?} must start with https:// or http://"
            ))
        })?;
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let name = match path.split_once('/') {
        Some((_, p)) => p.rsplit('/').next().unwrap_or(""),
        None => "",
    };
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~+".contains(c));
    if !ok {
        return Err(Error::invalid(format!(
            "download URL {url:?} does not end in a plain file name to cache it under"
        )));
    }
    Ok(name.to_string())
}

pub(crate) fn parse_md5(s: &str) -> Result<[u8; 16]> {
    let s = s.trim();
    if s.len() != 32 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::invalid(format!(
            "expected MD5 {s:?} is not 32 hexadecimal digits"
        )));
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    Ok(out)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// MD5 of a file, as raw bytes.
pub fn md5_of_file(path: &Path) -> Result<[u8; 16]> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// MD5 of a file as 32 lowercase hex digits.
pub fn md5_hex_of_file(path: &Path) -> Result<String> {
    md5_of_file(path).map(|d| hex(&d))
}

fn download_err(url: &str, msg: impl Into<String>) -> Error {
    Error::Download {
        url: url.to_string(),
        msg: msg.into(),
    }
}

/// Streams `url` into `tmp`, checking length and checksum.
fn download_to(url: &str, tmp: &Path, expected: Option<&[u8; 16]>) -> Result<()> {
    let (mut body, declared) = open_stream(url)?;
    if let Some(len) = declared {
        if len > MAX_DOWNLOAD_BYTES {
            return Err(download_err(
                url,
                format!(
                    "server announces {len} bytes, more than the {MAX_DOWNLOAD_BYTES}-byte limit"
                ),
            ));
        }
    }
    log::info!(
        "downloading {url}{}",
        declared
            .map(|l| format!(" ({l} bytes)"))
            .unwrap_or_default()
    );
    let file = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
    let mut out = BufWriter::new(file);
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total: u64 = 0;
    let mut next_report = 0u64;
    loop {
        let n = body
            .read(&mut buf)
            .map_err(|e| download_err(url, format!("reading the body after {total} bytes: {e}")))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_DOWNLOAD_BYTES {
            return Err(download_err(
                url,
                format!("body exceeds the {MAX_DOWNLOAD_BYTES}-byte limit"),
            ));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::io(tmp, e))?;
        if let Some(len) = declared {
            if total >= next_report {
                log::info!("downloaded {total} of {len} bytes from {url}");
                next_report = total + len / 10 + 1;
            }
        }
    }
    if let Some(len) = declared {
        if total != len {
            return Err(download_err(
                url,
                format!("received {total} bytes but the server announced {len}"),
            ));
        }
    }
    if total == 0 {
        return Err(download_err(url, "the server sent an empty body"));
    }
    let digest: [u8; 16] = hasher.finalize().into();
    if let Some(want) = expected {
        if &digest != want {
            return Err(download_err(
                url,
                format!(
                    "checksum mismatch: MD5 of the {total} bytes received is {} but {} is expected",
                    hex(&digest),
                    hex(want)
                ),
            ));
        }
    }
    let file = out
        .into_inner()
        .map_err(|e| Error::io(tmp, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(tmp, e))?;
    Ok(())
}

/// True for `localhost`, `127.x.y.z` and `[::1]` hosts.
#[cfg(feature = "download")]
fn is_loopback(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(h) = host.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[cfg(feature = "download")]
fn open_stream(url: &str) -> Result<(Box<dyn Read + Send>, Option<u64>)> {
    use std::time::Duration;
    let mut config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .max_redirects(5);
    if is_loopback(url) {
        config = config.proxy(None);
    }
    let agent: ureq::Agent = config.build().into();
    let response = agent.get(url).call().map_err(|e| {
        let msg = match &e {
            ureq::Error::StatusCode(code) => format!("the server answered HTTP status {code}"),
            ureq::Error::ConnectionFailed => "could not connect (connection refused?)".to_string(),
            ureq::Error::HostNotFound => "host not found".to_string(),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                format!("could not connect: {io}")
            }
            ureq::Error::Io(io) => format!("I/O error: {io}"),
            other => other.to_string(),
        };
        download_err(url, msg)
    })?;
    let declared = response.body().content_length();
    Ok((Box::new(response.into_body().into_reader()), declared))
}

#[cfg(not(feature = "download"))]
fn open_stream(url: &str) -> Result<(Box<dyn Read + Send>, Option<u64>)> {
    Err(download_err(
        url,
        "this build of ringsgd has no `download` feature: rebuild with it \
         (`--features download`) or fetch the archive by hand into the cache folder",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_from_urls() {
        assert_eq!(file_name_of(CIFAR10_URL).unwrap(), "cifar-10-binary.tar.gz");
        assert_eq!(
            file_name_of("http://127.0.0.1:8080/a/b.tar.gz?x=1").unwrap(),
            "b.tar.gz"
        );
        for bad in [
            "ftp://x/a.tar.gz",
            "http://host",
            "http://host/",
            "http://host/dir/",
            "http://host/..",
            "http://host/.hidden",
            "http://host/a%2Fb",
        ] {
            assert!(file_name_of(bad).is_err(), "{bad}");
        }
    }

    #[cfg(feature = "download")]
    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("http://127.0.0.1:1234/x"));
        assert!(is_loopback("http://localhost/x"));
        assert!(is_loopback("http://[::1]:80/x"));
        assert!(!is_loopback(CIFAR10_URL));
        assert!(!is_loopback("http://127.0.0.1.example.com/x"));
    }

    #[cfg(not(feature = "download"))]
    #[test]
    fn without_the_feature_only_the_cache_works() {
        let dir = std::env::temp_dir().join(format!("ringsgd-nodl-{}", std::process::id()));
        let url = "http://127.0.0.1:9/x.tar.gz";
        match fetch_archive(url, &dir, None) {
            Err(Error::Download { msg, .. }) => {
                assert!(msg.contains("`download` feature"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(dir.join("x.tar.gz"), b"cached").unwrap();
        let md5 = md5_hex_of_file(&dir.join("x.tar.gz")).unwrap();
        assert_eq!(
            fetch_archive(url, &dir, Some(&md5)).unwrap(),
            dir.join("x.tar.gz")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn md5_parsing() {
        assert_eq!(hex(&parse_md5(CIFAR10_MD5).unwrap()), CIFAR10_MD5);
        assert!(parse_md5("abc").is_err());
        assert!(parse_md5(&"g".repeat(32)).is_err());
    }
}
