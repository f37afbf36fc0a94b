//! Writing a sweep's results into a directory.

use std::path::{Path, PathBuf};

use super::analysis::ScalingRow;
use super::plot::{efficiency_svg, model_svg, speedup_svg, time_vs_nodes_svg};
use super::projection::ModelReport;
use super::report::{to_csv, to_markdown};
use ringsgd::{Error, Result};

/// Names of the files [`write_outputs`] writes, in order.
pub const OUTPUT_FILES: [&str; 6] = [
    "speedup.csv",
    "speedup.md",
    "time_vs_nodes.svg",
    "speedup.svg",
    "efficiency.svg",
    "model.svg",
];

fn write(dir: &Path, name: &str, text: &str, written: &mut Vec<PathBuf>) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    written.push(path);
    Ok(())
}

/// Writes `speedup.csv`, `speedup.md` (the table, then the model's account
/// when there is one), the three measurement plots and, with a model,
/// `model.svg` into `dir` (created if missing). Returns the paths written.
pub fn write_outputs(
    dir: &Path,
    rows: &[ScalingRow],
    model: Option<&ModelReport>,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = Vec::new();
    write(dir, OUTPUT_FILES[0], &to_csv(rows), &mut written)?;
    let mut md = String::from("# Speedup sweep\n\n");
    md.push_str(&to_markdown(rows));
    if let Some(m) = model {
        md.push_str("\n## Cost model\n\n");
        md.push_str(&m.summary_text());
    }
    write(dir, OUTPUT_FILES[1], &md, &mut written)?;
    write(
        dir,
        OUTPUT_FILES[2],
        &time_vs_nodes_svg(rows)?,
        &mut written,
    )?;
    write(dir, OUTPUT_FILES[3], &speedup_svg(rows)?, &mut written)?;
    write(dir, OUTPUT_FILES[4], &efficiency_svg(rows)?, &mut written)?;
    if let Some(m) = model {
        write(dir, OUTPUT_FILES[5], &model_svg(m)?, &mut written)?;
    }
    Ok(written)
}
