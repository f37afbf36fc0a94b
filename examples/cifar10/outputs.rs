//! The files a run writes, checked before any work: each a regular file or
//! absent in a folder that accepts files, none the same file as another or
//! as an input, and no existing checkpoint or metrics CSV replaced by a
//! fresh run unless `--overwrite` says so.

use std::path::{Path, PathBuf};

use ringsgd::{output, Error, Result};

use crate::cli::Args;

/// What the checks decided about the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Continue from `--checkpoint` (given `--resume`, or
    /// `--resume-if-present` and the file exists).
    pub resume: bool,
}

/// The output flags with their paths, in a fixed order (the training-curve
/// plot goes beside the metrics CSV).
pub fn outputs(args: &Args) -> Vec<(&'static str, PathBuf)> {
    let plot = args.metrics_csv.as_deref().map(crate::plot::plot_path);
    [
        ("--checkpoint", args.checkpoint.clone()),
        ("--metrics-csv", args.metrics_csv.clone()),
        ("--metrics-csv's plot (.svg)", plot),
        ("--export", args.export.clone()),
        ("--summary-json", args.summary_json.clone()),
    ]
    .into_iter()
    .filter_map(|(flag, p)| p.map(|p| (flag, p)))
    .collect()
}

/// `--flag PATH: what is wrong`, from a library error about `path`.
fn flag_error(flag: &str, e: Error) -> Error {
    let msg = match e {
        Error::InvalidArgument(m) => m,
        other => other.to_string(),
    };
    Error::invalid(format!("{flag}: {msg}"))
}

/// One file, as the kernel sees it: device and inode when it exists, else
/// the canonical folder plus the name it would get.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileId {
    Inode(u64, u64),
    Path(PathBuf),
}

fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = std::fs::metadata(path) {
        return Some(FileId::Inode(m.dev(), m.ino()));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(dir).ok()?;
    Some(FileId::Path(dir.join(path.file_name()?)))
}

/// Where a write to `path` lands (the end of its links) and its temporary
/// file.
fn ids_written(path: &Path) -> Vec<FileId> {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut ids: Vec<FileId> = file_id(&target).into_iter().collect();
    if let Some(tmp) = output::tmp_path(&target).ok().and_then(|t| file_id(&t)) {
        ids.push(tmp);
    }
    ids
}

/// The files `--data` names: the file itself, or the regular files up to
/// two levels below the folder (where the loader looks).
fn input_files(data: &Path) -> Vec<(PathBuf, FileId)> {
    const MAX_FILES: usize = 4096;
    let mut out = Vec::new();
    let mut stack = vec![(data.to_path_buf(), 0)];
    while let Some((p, depth)) = stack.pop() {
        let Ok(m) = std::fs::metadata(&p) else {
            continue;
        };
        if m.is_file() {
            if let Some(id) = file_id(&p) {
                out.push((p, id));
            }
        } else if m.is_dir() && depth <= 2 {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| (e.path(), depth + 1)));
            }
        }
        if out.len() >= MAX_FILES {
            break;
        }
    }
    out
}

/// Whether a metrics CSV holds anything beyond a header line: a fresh run
/// may replace an empty or header-only file (what a run killed before its
/// first epoch leaves), nothing else.
fn csv_rows(path: &Path) -> Result<usize> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 16).read_to_end(&mut head))
        .map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    match lines.next() {
        None => Ok(0),
        Some(first) if first.starts_with("epoch,") => Ok(lines.count()),
        // Not a metrics CSV: count its first line as content too.
        Some(_) => Ok(1 + lines.count()),
    }
}

/// Checks every output of `args` (on the rank that writes them) and decides
/// whether the run resumes. Touches nothing: each folder is probed with a
/// file that is removed at once.
pub fn plan(args: &Args) -> Result<Plan> {
    let outs = outputs(args);
    for (flag, path) in &outs {
        output::check_writable(path).map_err(|e| flag_error(flag, e))?;
    }

    // Distinct from each other (also through links) and from the inputs.
    let ids: Vec<Vec<FileId>> = outs.iter().map(|(_, p)| ids_written(p)).collect();
    for i in 0..outs.len() {
        for j in i + 1..outs.len() {
            if ids[i].iter().any(|a| ids[j].contains(a)) {
                let ((fa, pa), (fb, pb)) = (&outs[i], &outs[j]);
                return Err(Error::invalid(format!(
                    "{fa} {} and {fb} {} are the same file (directly, through a link, or as \
                     the other's temporary .tmp file): one output would replace the other; give \
                     each its own path",
                    pa.display(),
                    pb.display()
                )));
            }
        }
    }
    if let Some(data) = &args.data {
        let inputs = input_files(data);
        for ((flag, path), written) in outs.iter().zip(&ids) {
            if let Some((input, _)) = inputs.iter().find(|(_, id)| written.contains(id)) {
                return Err(Error::invalid(format!(
                    "{flag} {} is the input file {} (of --data {}): writing it would destroy \
                     the data; choose another path",
                    path.display(),
                    input.display(),
                    data.display()
                )));
            }
        }
    }

    // An existing checkpoint or metrics CSV is replaced only when asked.
    let ckpt_exists = args.checkpoint.as_deref().is_some_and(|p| p.exists());
    let resume = if args.resume {
        if !ckpt_exists {
            let p = args.checkpoint.as_deref().unwrap_or(Path::new(""));
            return Err(Error::invalid(format!(
                "--resume: checkpoint {} does not exist (--resume-if-present starts afresh \
                 when it is missing)",
                p.display()
            )));
        }
        true
    } else {
        args.resume_if_present && ckpt_exists
    };
    if !resume && !args.overwrite {
        if let (Some(p), true) = (&args.checkpoint, ckpt_exists) {
            return Err(Error::invalid(format!(
                "--checkpoint {} already exists and a fresh run would replace it: pass --resume \
                 to continue from it, --overwrite to start afresh and replace it, or choose \
                 another path",
                p.display()
            )));
        }
        if let Some(p) = &args.metrics_csv {
            if p.exists() {
                let rows = csv_rows(p).map_err(|e| flag_error("--metrics-csv", e))?;
                if rows > 0 {
                    return Err(Error::invalid(format!(
                        "--metrics-csv {} already holds {rows} row(s) and a fresh run would \
                         replace it: pass --resume (with the run's --checkpoint) to append to \
                         it, --overwrite to replace it, or choose another path",
                        p.display()
                    )));
                }
            }
        }
    }
    Ok(Plan { resume })
}
