//! Writing output files safely: checkpoints, exports, metrics, summaries.
//!
//! Every writer of the crate goes through [`write_atomic`]: the bytes go to
//! `<name>.tmp` in the target's folder, are flushed to disk, and the
//! temporary file is renamed over the target (then the folder is synced), so
//! a crash or a full disk leaves either the old file or the new one, never a
//! mix. The target must be a regular file or absent: a rename over a device
//! node (`/dev/null`), a FIFO or a directory would replace it with a regular
//! file (or fail half-way), so such targets are refused before anything is
//! written. A symbolic link is followed: the file it points to is replaced
//! and the link stays.
//!
//! [`check_writable`] runs the same checks up front and proves that the
//! folder accepts new files (it creates and removes a probe file), so a
//! program can refuse a bad output path before it spends hours computing
//! what it would write there.
//!
//! ```
//! # fn main() -> ringsgd::Result<()> {
//! use ringsgd::output::{check_writable, write_atomic};
//! let path = std::env::temp_dir().join(format!("ringsgd-doc-out-{}.txt", std::process::id()));
//! check_writable(&path)?;
//! write_atomic(&path, b"one\n")?;
//! write_atomic(&path, b"two\n")?;
//! assert_eq!(std::fs::read(&path).unwrap(), b"two\n");
//! assert!(check_writable(&std::env::temp_dir()).is_err(), "a folder is not an output file");
//! # std::fs::remove_file(&path).ok();
//! # Ok(())
//! # }
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What kind of file system object `m` describes, for error messages.
fn kind(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        return "a directory";
    }
    if t.is_symlink() {
        return "a symbolic link";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// The file a write to `path` must replace: `path` itself, or the end of
/// its chain of symbolic links. `Ok(None)` in `.1` when nothing is there
/// yet. Fails when the target exists but is not a regular file, or is a
/// dangling link.
fn resolve(path: &Path) -> Result<(PathBuf, Option<std::fs::Metadata>)> {
    if path.as_os_str().is_empty() || path.file_name().is_none() {
        return Err(Error::invalid(format!(
            "output path {:?} does not name a file",
            path.display().to_string()
        )));
    }
    let link = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((path.to_path_buf(), None))
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let (target, meta) = if link.file_type().is_symlink() {
        let target = std::fs::canonicalize(path).map_err(|e| {
            Error::invalid(format!(
                "output {} is a symbolic link that cannot be followed ({e}); refusing to write \
                 through it",
                path.display()
            ))
        })?;
        let meta = std::fs::metadata(&target).map_err(|e| Error::io(&target, e))?;
        (target, meta)
    } else {
        (path.to_path_buf(), link)
    };
    if !meta.is_file() {
        return Err(Error::invalid(format!(
            "output {} is {}, not a regular file; refusing to replace it",
            path.display(),
            kind(&meta)
        )));
    }
    Ok((target, Some(meta)))
}

/// The folder holding `path` (`.` for a bare file name).
fn folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `<path>.tmp` next to `path`: where [`write_atomic`] stages the bytes.
pub fn tmp_path(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        Error::invalid(format!(
            "output path {:?} does not name a file",
            path.display().to_string()
        ))
    })?;
    let mut tmp = name.to_os_string();
    tmp.push(".tmp");
    Ok(path.with_file_name(tmp))
}

/// Removes a stale temporary file left by an interrupted write; refuses
/// anything at that name that is not a regular file or a link.
fn clear_stale_tmp(tmp: &Path) -> Result<()> {
    match std::fs::symlink_metadata(tmp) {
        Ok(m) if m.is_file() || m.file_type().is_symlink() => {
            std::fs::remove_file(tmp).map_err(|e| Error::io(tmp, e))
        }
        Ok(m) => Err(Error::invalid(format!(
            "temporary file {} is {}; remove it or choose another output path",
            tmp.display(),
            kind(&m)
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(tmp, e)),
    }
}

/// Checks, without changing anything that exists, that `path` can be
/// written by [`write_atomic`]: it is a regular file (or a link to one) or
/// absent, its folder exists, and the folder accepts new files (a probe
/// file `.<name>.probe-<pid>` is created and removed at once).
///
/// Free space is not checked: a full disk is caught by [`write_atomic`],
/// which then leaves the old file intact.
pub fn check_writable(path: &Path) -> Result<()> {
    let (target, _) = resolve(path)?;
    let dir = folder(&target);
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(m) => {
            return Err(Error::invalid(format!(
                "output {}: {} is {}, not a folder",
                path.display(),
                dir.display(),
                kind(&m)
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::invalid(format!(
                "output {}: folder {} does not exist",
                path.display(),
                dir.display()
            )))
        }
        Err(e) => return Err(Error::io(&dir, e)),
    }
    let name = target.file_name().expect("resolve checked the file name");
    let mut probe_name = std::ffi::OsString::from(".");
    probe_name.push(name);
    probe_name.push(format!(".probe-{}", std::process::id()));
    let probe = dir.join(probe_name);
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(f) => {
            drop(f);
            std::fs::remove_file(&probe).map_err(|e| Error::io(&probe, e))
        }
        Err(e) => Err(Error::invalid(format!(
            "output {}: cannot create files in folder {}: {e}",
            path.display(),
            dir.display()
        ))),
    }
}

/// Writes `bytes` to `path` atomically (see the [module docs](self)):
/// `<path>.tmp`, fsync, rename over `path`, fsync of the folder.
///
/// Refuses, before writing anything, a target that exists and is not a
/// regular file (device node, FIFO, socket, directory) or is a dangling
/// link; a link to a regular file is followed and its target replaced. A
/// replaced file keeps its permission bits. On any failure the temporary
/// file is removed and the old file is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let (target, old) = resolve(path)?;
    let tmp = tmp_path(&target)?;
    clear_stale_tmp(&tmp)?;
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        if let Some(m) = &old {
            f.set_permissions(m.permissions())?;
        }
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        let kept = if old.is_some() {
            "the existing file is unchanged"
        } else {
            "nothing was written"
        };
        let msg = format!("writing {} failed: {e}; {kept}", tmp.display());
        return Err(Error::io(&target, std::io::Error::new(e.kind(), msg)));
    }
    // The target may have changed since `resolve`; look again right before
    // the rename so a device node that appeared meanwhile is not replaced.
    if let Err(e) = resolve(&target) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, &target) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&target, e));
    }
    if let Ok(d) = File::open(folder(&target)) {
        // Persist the rename; not all platforms can sync a directory.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ringsgd_output_{name}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replaces_regular_files_and_follows_links() {
        let dir = scratch("links");
        let real = dir.join("real.bin");
        std::fs::write(&real, b"old").unwrap();
        let link = dir.join("link.bin");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        check_writable(&link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        // A stale temporary file from an interrupted write is replaced.
        std::fs::write(dir.join("real.bin.tmp"), b"stale").unwrap();
        write_atomic(&real, b"newer").unwrap();
        assert_eq!(std::fs::read(&real).unwrap(), b"newer");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 2, "no temporary or probe file left: {names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_non_regular_targets_and_changes_nothing() {
        let dir = scratch("nonregular");
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("keep"), b"keep").unwrap();
        let e = write_atomic(&sub, b"x").unwrap_err().to_string();
        assert!(e.contains("is a directory") && e.contains("sub"), "{e}");
        assert_eq!(std::fs::read(sub.join("keep")).unwrap(), b"keep");
        let e = check_writable(&sub).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");

        let dangling = dir.join("dangling");
        std::os::unix::fs::symlink(dir.join("nowhere/x"), &dangling).unwrap();
        let e = write_atomic(&dangling, b"x").unwrap_err().to_string();
        assert!(e.contains("symbolic link") && e.contains("dangling"), "{e}");

        let missing = dir.join("no-such-folder/out.bin");
        let e = check_writable(&missing).unwrap_err().to_string();
        assert!(
            e.contains("does not exist") && e.contains("no-such-folder"),
            "{e}"
        );
        assert!(write_atomic(&missing, b"x").is_err());
        assert!(!dir.join("no-such-folder").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_fifo_without_opening_it() {
        let dir = scratch("fifo");
        let fifo = dir.join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !made {
            eprintln!("skipped: mkfifo not available");
            return;
        }
        // Opening a FIFO for writing would block: the check must not.
        let e = check_writable(&fifo).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        let e = write_atomic(&fifo, b"x").unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_device_node_when_root() {
        let dir = scratch("device");
        // A node with /dev/null's numbers, made here: /dev itself is never
        // touched.
        let node = dir.join("null");
        let made = std::process::Command::new("mknod")
            .arg(&node)
            .args(["c", "1", "3"])
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !made {
            eprintln!("skipped: mknod needs root");
            return;
        }
        let e = write_atomic(&node, b"x").unwrap_err().to_string();
        assert!(e.contains("character device"), "{e}");
        assert!(check_writable(&node).is_err());
        assert!(std::fs::symlink_metadata(&node)
            .unwrap()
            .file_type()
            .is_char_device());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_only_folder_is_refused_up_front() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("readonly");
        let ro = dir.join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let probe = ro.join("probe");
        if std::fs::write(&probe, b"").is_ok() {
            // Root ignores permission bits.
            eprintln!("skipped: running as root, permission bits are not enforced");
        } else {
            let e = check_writable(&ro.join("out.ckpt"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("cannot create files"), "{e}");
        }
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
