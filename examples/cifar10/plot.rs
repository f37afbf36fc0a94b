//! The training curves as an SVG beside the metrics CSV: loss (train, test)
//! and accuracy (train, test) per epoch, drawn from the CSV itself, so a
//! resumed run's plot shows the whole run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ringsgd::{output, Error, Result};

/// Where the plot of `csv` goes: the same path with `.svg`.
pub fn plot_path(csv: &Path) -> PathBuf {
    csv.with_extension("svg")
}

/// One series: its name, colour and `(epoch, value)` points.
struct Series {
    name: &'static str,
    colour: &'static str,
    points: Vec<(f64, f64)>,
}

/// Reads the CSV's columns `name` by header, as `(epoch, value)` points
/// (empty cells skipped).
fn columns(text: &str, names: &[&str]) -> Result<Vec<Vec<(f64, f64)>>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| Error::invalid("the metrics CSV is empty"))?
        .split(',')
        .collect();
    let col = |n: &str| {
        header
            .iter()
            .position(|h| *h == n)
            .ok_or_else(|| Error::invalid(format!("the metrics CSV has no column {n:?}")))
    };
    let epoch = col("epoch")?;
    let idx: Vec<usize> = names.iter().map(|n| col(n)).collect::<Result<_>>()?;
    let mut out = vec![Vec::new(); names.len()];
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        let Some(Ok(e)) = cells.get(epoch).map(|c| c.parse::<f64>()) else {
            continue;
        };
        for (series, &i) in out.iter_mut().zip(&idx) {
            if let Some(Ok(v)) = cells.get(i).map(|c| c.parse::<f64>()) {
                if v.is_finite() {
                    series.push((e, v));
                }
            }
        }
    }
    Ok(out)
}

/// One panel at `(x0, y0)`, `w` x `h` pixels, with its series.
fn panel(svg: &mut String, title: &str, x0: f64, y0: f64, w: f64, h: f64, series: &[Series]) {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    if xmin > xmax {
        (xmin, xmax, ymin, ymax) = (0.0, 1.0, 0.0, 1.0);
    }
    if xmax - xmin < 1e-9 {
        xmax = xmin + 1.0;
    }
    if ymax - ymin < 1e-9 {
        ymax = ymin + 1.0;
    }
    let sx = |x: f64| x0 + (x - xmin) / (xmax - xmin) * w;
    let sy = |y: f64| y0 + h - (y - ymin) / (ymax - ymin) * h;
    let _ = writeln!(
        svg,
        r##"<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="14">{title}</text>"#,
        x0 + w / 2.0,
        y0 - 8.0
    );
    for (v, y) in [(ymin, y0 + h), (ymax, y0)] {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end" font-size="11">{v:.3}</text>"#,
            x0 - 4.0,
            y + 4.0
        );
    }
    for (v, x) in [(xmin, x0), (xmax, x0 + w)] {
        let _ = writeln!(
            svg,
            r#"<text x="{x}" y="{}" text-anchor="middle" font-size="11">epoch {v:.0}</text>"#,
            y0 + h + 16.0
        );
    }
    for (k, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        if !pts.is_empty() {
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                s.colour,
                pts.join(" ")
            );
        }
        let ly = y0 + 16.0 + 16.0 * k as f64;
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{ly}" font-size="12" fill="{}">{}</text>"#,
            x0 + w - 110.0,
            s.colour,
            s.name
        );
    }
}

/// Draws the curves of the metrics CSV `csv` into `out` (atomically).
pub fn write_curves(csv: &Path, out: &Path) -> Result<()> {
    let text = std::fs::read_to_string(csv).map_err(|e| Error::Io {
        path: csv.to_path_buf(),
        source: e,
    })?;
    let cols = columns(
        &text,
        &["train_loss", "test_loss", "train_accuracy", "test_accuracy"],
    )?;
    let mut it = cols.into_iter();
    let mut next = || it.next().unwrap_or_default();
    let (tl, vl, ta, va) = (next(), next(), next(), next());
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="900" height="360" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="900" height="360" fill="white"/>"#);
    let loss = [
        Series {
            name: "train loss",
            colour: "#1f77b4",
            points: tl,
        },
        Series {
            name: "test loss",
            colour: "#d62728",
            points: vl,
        },
    ];
    let acc = [
        Series {
            name: "train accuracy",
            colour: "#1f77b4",
            points: ta,
        },
        Series {
            name: "test accuracy",
            colour: "#d62728",
            points: va,
        },
    ];
    panel(&mut svg, "loss", 70.0, 40.0, 350.0, 270.0, &loss);
    panel(&mut svg, "accuracy", 520.0, 40.0, 350.0, 270.0, &acc);
    svg.push_str("</svg>\n");
    output::write_atomic(out, svg.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_by_header_skip_empty_cells() {
        let t = "epoch,train_loss,test_accuracy\n1,2.0,0.3\n2,1.5,\n";
        let c = columns(t, &["train_loss", "test_accuracy"]).unwrap();
        assert_eq!(c[0], vec![(1.0, 2.0), (2.0, 1.5)]);
        assert_eq!(c[1], vec![(1.0, 0.3)]);
        assert!(columns(t, &["nope"]).is_err());
    }
}
