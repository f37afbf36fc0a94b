//! The results as CSV and as a markdown table.

use std::fmt::Write as _;

use super::analysis::ScalingRow;

/// Header line of [`to_csv`] (without the newline). Times are seconds,
/// `speedup` and `efficiency` are empty when the 1 x 1 baseline is missing.
pub const CSV_HEADER: &str = "algorithm,nodes,cores_per_rank,equivalent_cores,global_batch,\
steps,warmup_steps,grad_bytes,step_s,compute_s,wait_s,allreduce_s,other_s,epoch_s,\
images_per_sec,speedup,efficiency,peak_rss_bytes,total_s";

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|x| format!("{x:.decimals$}")).unwrap_or_default()
}

/// The rows as CSV: [`CSV_HEADER`], then one line per row, `\n` line ends.
///
/// ```
/// use ringsgd_speedup::{to_csv, CSV_HEADER};
/// assert_eq!(to_csv(&[]), format!("{CSV_HEADER}\n"));
/// ```
pub fn to_csv(rows: &[ScalingRow]) -> String {
    let mut out = String::with_capacity(64 * (rows.len() + 1));
    out.push_str(CSV_HEADER);
    out.push('\n');
    for r in rows {
        let m = &r.measurement;
        let s = &m.summary;
        let t = &r.split;
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.3},{:.2},{},{},{},{:.3}",
            m.algorithm.name(),
            m.nodes,
            m.cores_per_rank,
            m.equivalent_cores(),
            s.global_batch,
            s.steps,
            s.warmup_steps,
            s.grad_bytes,
            t.step_s,
            t.compute_s,
            t.wait_s,
            t.allreduce_s,
            t.other_s,
            r.epoch_s,
            r.images_per_sec,
            opt(r.speedup, 4),
            opt(r.efficiency, 4),
            s.peak_rss_bytes_max,
            s.total_s,
        );
    }
    out
}

/// The rows as a GitHub-flavoured markdown table (times in ms, epoch in s,
/// RSS in MiB, `-` where the baseline is missing).
pub fn to_markdown(rows: &[ScalingRow]) -> String {
    let mut out = String::new();
    out.push_str(
        "| algorithm | nodes | cores/rank | cores | step ms | compute ms | wait ms | \
         allreduce ms | other ms | epoch s | img/s | speedup | efficiency | peak RSS MiB |\n",
    );
    out.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for r in rows {
        let m = &r.measurement;
        let t = &r.split;
        let ms = |s: f64| format!("{:.1}", s * 1e3);
        let speedup = r.speedup.map_or("-".into(), |x| format!("{x:.2}x"));
        let eff = r
            .efficiency
            .map_or("-".into(), |x| format!("{:.0}%", x * 100.0));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {:.1} |",
            m.algorithm.name(),
            m.nodes,
            m.cores_per_rank,
            m.equivalent_cores(),
            ms(t.step_s),
            ms(t.compute_s),
            ms(t.wait_s),
            ms(t.allreduce_s),
            ms(t.other_s),
            r.epoch_s,
            r.images_per_sec,
            speedup,
            eff,
            m.summary.peak_rss_bytes_max as f64 / (1024.0 * 1024.0),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::analysis::analyse;
    use super::super::summary::tests::summary;
    use super::super::summary::Measurement;
    use super::*;
    use ringsgd::collectives::Algorithm;

    fn rows() -> Vec<ScalingRow> {
        let ms = vec![
            Measurement::new(
                Algorithm::Ring,
                1,
                1,
                summary(Algorithm::Ring, 1, 1, 0.8, 0.75, 0.0, 0.01),
            )
            .unwrap(),
            Measurement::new(
                Algorithm::Ring,
                2,
                1,
                summary(Algorithm::Ring, 2, 1, 0.5, 0.4, 0.05, 0.04),
            )
            .unwrap(),
            Measurement::new(
                Algorithm::Mpi,
                2,
                1,
                summary(Algorithm::Mpi, 2, 1, 0.5, 0.4, 0.05, 0.04),
            )
            .unwrap(),
        ];
        analyse(&ms, 64).unwrap()
    }

    #[test]
    fn csv_is_exact() {
        let expected = format!(
            "{CSV_HEADER}\n\
             ring,1,1,1,64,12,2,4467880,0.800000,0.750000,0.000000,0.010000,0.040000,0.800,80.00,1.0000,1.0000,52428800,9.600\n\
             ring,2,1,2,64,12,2,4467880,0.500000,0.400000,0.050000,0.040000,0.010000,0.500,128.00,1.6000,0.8000,52428800,6.000\n\
             mpi,2,1,2,64,12,2,4467880,0.500000,0.400000,0.050000,0.040000,0.010000,0.500,128.00,,,52428800,6.000\n"
        );
        assert_eq!(to_csv(&rows()), expected);
        // Every line has as many fields as the header.
        let n = CSV_HEADER.split(',').count();
        assert_eq!(n, 19);
        for line in expected.lines() {
            assert_eq!(line.split(',').count(), n, "{line}");
        }
    }

    #[test]
    fn markdown_is_exact() {
        let md = to_markdown(&rows());
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[2],
            "| ring | 1 | 1 | 1 | 800.0 | 750.0 | 0.0 | 10.0 | 40.0 | 0.8 | 80.0 | 1.00x | 100% | 50.0 |"
        );
        assert_eq!(
            lines[3],
            "| ring | 2 | 1 | 2 | 500.0 | 400.0 | 50.0 | 40.0 | 10.0 | 0.5 | 128.0 | 1.60x | 80% | 50.0 |"
        );
        assert_eq!(
            lines[4],
            "| mpi | 2 | 1 | 2 | 500.0 | 400.0 | 50.0 | 40.0 | 10.0 | 0.5 | 128.0 | - | - | 50.0 |"
        );
        for l in &lines {
            assert_eq!(l.matches('|').count(), 15, "{l}");
        }
    }
}
