//! SVG plots of a sweep, drawn with `plotters`' SVG backend (no fonts or
//! system libraries needed: text is emitted as SVG `<text>`).
//!
//! * [`time_vs_nodes_svg`]: time per step against nodes, stacked compute /
//!   wait / allreduce / other, one panel per algorithm, one bar per cores per
//!   rank.
//! * [`speedup_svg`]: speedup against nodes (left) beside speedup against
//!   equivalent cores, nodes x 1 core versus 1 node x k cores (right).
//! * [`efficiency_svg`]: efficiency against equivalent cores.
//! * [`model_svg`]: the cost model's speedup and efficiency for 1..64 nodes on
//!   100 Mbit/s and 1 Gbit/s links, ring versus gather-to-root, with the
//!   measured points, the model fitted to them, and the node count where
//!   efficiency falls under 50% marked.

use std::collections::BTreeSet;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::analysis::ScalingRow;
use super::model::Scheme;
use super::projection::{ModelReport, Scenario};
use super::summary::algorithm_label;
use ringsgd::collectives::Algorithm;
use ringsgd::{Error, Result};

/// What drawing with plotters gives: its errors are boxed until [`render`]
/// makes them the crate's.
type Drawn<T> = std::result::Result<T, Box<dyn std::error::Error>>;
type PlotResult = Drawn<()>;

const FONT: &str = "sans-serif";
const EQUIVALENT_CORES: &str = "equivalent cores (nodes x cores per rank)";
const GRAY: RGBColor = RGBColor(150, 150, 150);

fn alg_color(a: Algorithm) -> RGBColor {
    match a {
        Algorithm::Ring => RGBColor(31, 119, 180),
        Algorithm::Mpi => RGBColor(44, 160, 44),
        Algorithm::Naive => RGBColor(214, 39, 40),
    }
}

fn scheme_color(s: Scheme) -> RGBColor {
    match s {
        Scheme::Ring => alg_color(Algorithm::Ring),
        Scheme::GatherToRoot(_) => alg_color(Algorithm::Naive),
    }
}

/// `color` lightened towards white by step `i` of `n` (darkest first).
fn shade(color: RGBColor, i: usize, n: usize) -> RGBColor {
    if n <= 1 {
        return color;
    }
    let t = 0.55 * i as f64 / (n - 1) as f64;
    let mix = |c: u8| (c as f64 + (255.0 - c as f64) * t).round() as u8;
    RGBColor(mix(color.0), mix(color.1), mix(color.2))
}

fn render(
    name: &str,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, plotters::coord::Shift>) -> PlotResult,
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let res = root
            .fill(&WHITE)
            .map_err(|e| e.into())
            .and_then(|_| draw(&root))
            .and_then(|_| root.present().map_err(|e| e.into()));
        res.map_err(|e: Box<dyn std::error::Error>| {
            Error::io(
                name,
                std::io::Error::other(format!("drawing the plot failed: {e}")),
            )
        })?;
    }
    Ok(svg)
}

fn int_label(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-6 && *x >= 0.5 {
        format!("{}", x.round() as i64)
    } else {
        String::new()
    }
}

/// Labels of a log node axis: 1, 2, 3, 4, 6, 8, then multiples of 10.
fn log_label(x: &f64) -> String {
    let n = x.round() as i64;
    if (x - n as f64).abs() > 1e-6 || (n < 10 && !matches!(n, 1 | 2 | 3 | 4 | 6 | 8)) {
        String::new()
    } else {
        n.to_string()
    }
}

fn percent_label(y: &f64) -> String {
    format!("{:.0}%", y * 100.0)
}

fn cores_word(c: usize) -> &'static str {
    if c == 1 {
        "core"
    } else {
        "cores"
    }
}

fn algorithms(rows: &[ScalingRow]) -> Vec<Algorithm> {
    rows.iter()
        .map(|r| r.algorithm())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

type Chart<'a, DB, X, Y> = ChartContext<'a, DB, Cartesian2d<X, Y>>;
type LinChart<'a, DB> = Chart<'a, DB, RangedCoordf64, RangedCoordf64>;

/// How a panel's x axis is ticked.
#[derive(Clone, Copy)]
enum Ticks {
    /// Whole numbers up to this many nodes or cores.
    Whole(usize),
    /// A log scale labelled by [`log_label`], without minor grid lines.
    Log,
}

/// What sets one panel apart; margins, fonts and the rest are shared.
struct Panel<'a> {
    caption: &'a str,
    caption_size: u32,
    y_label_area: u32,
    x_desc: &'a str,
    y_desc: &'a str,
    /// Vertical grid lines (off between the bars of a bar chart).
    x_grid: bool,
    /// Y tick labels as percentages of 1.
    percent: bool,
}

impl Default for Panel<'_> {
    fn default() -> Self {
        Panel {
            caption: "",
            caption_size: 16,
            y_label_area: 45,
            x_desc: "",
            y_desc: "",
            x_grid: true,
            percent: false,
        }
    }
}

impl Panel<'_> {
    /// The panel's chart on `area` over `x` by `y`, with its grid and axes
    /// drawn.
    fn chart<'a, DB, X, Y>(
        &self,
        area: &'a DrawingArea<DB, plotters::coord::Shift>,
        ticks: Ticks,
        x: X,
        y: Y,
    ) -> Drawn<Chart<'a, DB, X::CoordDescType, Y::CoordDescType>>
    where
        DB: DrawingBackend + 'a,
        DB::ErrorType: 'static,
        X: AsRangedCoord<Value = f64>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(area)
            .caption(self.caption, (FONT, self.caption_size))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(self.y_label_area)
            .build_cartesian_2d(x, y)?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(self.x_desc).y_desc(self.y_desc);
        match ticks {
            Ticks::Whole(max) => mesh.x_labels(max + 2).x_label_formatter(&int_label),
            Ticks::Log => mesh.light_line_style(WHITE).x_label_formatter(&log_label),
        };
        if !self.x_grid {
            mesh.disable_x_mesh();
        }
        if self.percent {
            mesh.y_label_formatter(&percent_label);
        }
        mesh.draw()?;
        Ok(chart)
    }
}

/// Draws the labels of `chart`'s series at `position`.
fn draw_legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
    font_size: u32,
) -> PlotResult
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, font_size))
        .draw()?;
    Ok(())
}

/// A gray dashed guide from `from` to `to`: ideal speedup, efficiency levels.
fn guide(
    from: (f64, f64),
    to: (f64, f64),
) -> DashedLineSeries<std::vec::IntoIter<(f64, f64)>, i32> {
    DashedLineSeries::new(vec![from, to], 6, 4, GRAY.stroke_width(1))
}

/// The legend's sample of a [`guide`].
fn guide_key((x, y): (i32, i32)) -> PathElement<(i32, i32)> {
    PathElement::new(vec![(x, y), (x + 18, y)], GRAY)
}

/// Time per step against nodes, stacked compute / wait / allreduce / other.
pub fn time_vs_nodes_svg(rows: &[ScalingRow]) -> Result<String> {
    let algs = algorithms(rows);
    let panels = algs.len().max(1);
    render("time_vs_nodes.svg", (420 * panels as u32, 440), |root| {
        let root = root.titled(
            "Time per step vs nodes: compute + wait (imbalance) + allreduce + other",
            (FONT, 18),
        )?;
        let areas = root.split_evenly((1, panels));
        let parts: [(&str, RGBColor); 4] = [
            ("compute", RGBColor(100, 149, 237)),
            ("wait", RGBColor(255, 165, 0)),
            ("allreduce", RGBColor(220, 20, 60)),
            ("other", RGBColor(170, 170, 170)),
        ];
        for (area, &alg) in areas.iter().zip(&algs) {
            let mine: Vec<&ScalingRow> = rows.iter().filter(|r| r.algorithm() == alg).collect();
            let max_nodes = mine.iter().map(|r| r.nodes()).max().unwrap_or(1);
            let cores: Vec<usize> = mine
                .iter()
                .map(|r| r.cores_per_rank())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let y_max = mine
                .iter()
                .map(|r| r.split.stacked_s() * 1e3)
                .fold(0.0, f64::max)
                .max(1e-3)
                * 1.15;
            let panel = Panel {
                caption: algorithm_label(alg),
                y_label_area: 55,
                x_desc: "nodes",
                y_desc: "ms per step",
                x_grid: false,
                ..Panel::default()
            };
            let mut chart = panel.chart(
                area,
                Ticks::Whole(max_nodes),
                0.4f64..max_nodes as f64 + 0.6,
                0f64..y_max,
            )?;
            let width = 0.8 / cores.len().max(1) as f64;
            for r in &mine {
                let i = cores
                    .iter()
                    .position(|&c| c == r.cores_per_rank())
                    .unwrap_or(0);
                let x0 = r.nodes() as f64 - 0.4 + i as f64 * width;
                let x1 = x0 + width * 0.9;
                let mut y = 0.0;
                let t = &r.split;
                for ((_, color), v) in
                    parts
                        .iter()
                        .zip([t.compute_s, t.wait_s, t.allreduce_s, t.other_s])
                {
                    let h = v * 1e3;
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(x0, y), (x1, y + h)],
                        color.filled(),
                    )))?;
                    y += h;
                }
                chart.draw_series(std::iter::once(Text::new(
                    format!("{}c", r.cores_per_rank()),
                    ((x0 + x1) / 2.0, y),
                    (FONT, 11)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )))?;
            }
            for (name, color) in parts {
                chart
                    .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
                    .label(name)
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                    });
            }
            draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 12)?;
        }
        Ok(())
    })
}

/// A series of `(x, y)` points as a line with markers, labelled.
fn line_with_points<DB: DrawingBackend>(
    chart: &mut LinChart<'_, DB>,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    label: String,
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    if points.is_empty() {
        return Ok(());
    }
    chart
        .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
        .map_err(|e| e.to_string())?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    chart
        .draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, color.filled())),
        )
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// One line per algorithm and cores per rank through the rows' `point`s,
/// in the algorithm's color, lighter the more cores, labelled by `label`.
fn line_per_configuration<DB: DrawingBackend>(
    chart: &mut LinChart<'_, DB>,
    rows: &[ScalingRow],
    point: impl Fn(&ScalingRow) -> Option<(f64, f64)>,
    label: impl Fn(Algorithm, usize) -> String,
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    for alg in algorithms(rows) {
        let cores: BTreeSet<usize> = rows
            .iter()
            .filter(|r| r.algorithm() == alg)
            .map(|r| r.cores_per_rank())
            .collect();
        for (i, &c) in cores.iter().enumerate() {
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.algorithm() == alg && r.cores_per_rank() == c)
                .filter_map(&point)
                .collect();
            line_with_points(
                chart,
                pts,
                shade(alg_color(alg), i, cores.len()),
                label(alg, c),
            )?;
        }
    }
    Ok(())
}

/// "1 node x k cores": the one-node rows' `value` against cores per rank,
/// of ring or, where ring was not run, the first algorithm that was.
fn one_node_line<DB: DrawingBackend>(
    chart: &mut LinChart<'_, DB>,
    rows: &[ScalingRow],
    value: impl Fn(&ScalingRow) -> Option<f64>,
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    let algs = algorithms(rows);
    let alg = if algs.contains(&Algorithm::Ring) {
        Some(Algorithm::Ring)
    } else {
        algs.first().copied()
    };
    if let Some(a) = alg {
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.algorithm() == a && r.nodes() == 1)
            .filter_map(|r| value(r).map(|v| (r.cores_per_rank() as f64, v)))
            .collect();
        line_with_points(chart, pts, BLACK, "1 node x k cores".into())?;
    }
    Ok(())
}

/// A panel of speedup against a count up to `max`: nodes or equivalent
/// cores.
fn speedup_panel<'a, DB>(
    area: &'a DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    x_desc: &str,
    max: usize,
    y_max: f64,
) -> Drawn<LinChart<'a, DB>>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
{
    let panel = Panel {
        caption,
        x_desc,
        y_desc: "speedup",
        ..Panel::default()
    };
    panel.chart(area, Ticks::Whole(max), 0.8..max as f64 + 0.2, 0.0..y_max)
}

/// The ideal speedup, `max` at `max`, labelled `label`.
fn ideal_speedup<DB>(chart: &mut LinChart<'_, DB>, max: usize, label: &str) -> PlotResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let top = max as f64;
    chart
        .draw_series(guide((1.0, 1.0), (top, top)))?
        .label(label)
        .legend(guide_key);
    Ok(())
}

/// Speedup against nodes beside speedup against equivalent cores.
pub fn speedup_svg(rows: &[ScalingRow]) -> Result<String> {
    let algs = algorithms(rows);
    render("speedup.svg", (1100, 460), |root| {
        let root = root.titled(
            "Speedup vs 1 node x 1 core (fixed global batch)",
            (FONT, 18),
        )?;
        let (left, right) = root.split_horizontally(550);
        let max_nodes = rows.iter().map(|r| r.nodes()).max().unwrap_or(1);
        let max_eq = rows.iter().map(|r| r.equivalent_cores()).max().unwrap_or(1);
        let y_max = rows
            .iter()
            .filter_map(|r| r.speedup)
            .fold(max_eq as f64, f64::max)
            * 1.1;

        // Left: speedup against nodes, one line per algorithm and cores/rank.
        let mut chart = speedup_panel(&left, "adding nodes", "nodes", max_nodes, y_max)?;
        ideal_speedup(&mut chart, max_nodes, "ideal (nodes)")?;
        line_per_configuration(
            &mut chart,
            rows,
            |r| r.speedup.map(|s| (r.nodes() as f64, s)),
            |alg, c| format!("{}, {c} {}/rank", algorithm_label(alg), cores_word(c)),
        )?;
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft, 12)?;

        // Right: k nodes x 1 core against 1 node x k cores.
        let mut chart = speedup_panel(
            &right,
            "nodes vs the same number of cores",
            EQUIVALENT_CORES,
            max_eq,
            y_max,
        )?;
        ideal_speedup(&mut chart, max_eq, "ideal")?;
        one_node_line(&mut chart, rows, |r| r.speedup)?;
        for &alg in &algs {
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.algorithm() == alg && r.cores_per_rank() == 1)
                .filter_map(|r| r.speedup.map(|s| (r.nodes() as f64, s)))
                .collect();
            line_with_points(
                &mut chart,
                pts,
                alg_color(alg),
                format!("k nodes x 1 core, {}", algorithm_label(alg)),
            )?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft, 12)?;
        Ok(())
    })
}

/// Efficiency (speedup / equivalent cores) against equivalent cores.
pub fn efficiency_svg(rows: &[ScalingRow]) -> Result<String> {
    render("efficiency.svg", (700, 460), |root| {
        let max_eq = rows.iter().map(|r| r.equivalent_cores()).max().unwrap_or(1);
        let y_max = rows.iter().filter_map(|r| r.efficiency).fold(1.0, f64::max) * 1.1;
        let panel = Panel {
            caption: "Efficiency = speedup / (nodes x cores per rank)",
            caption_size: 18,
            y_label_area: 50,
            x_desc: EQUIVALENT_CORES,
            y_desc: "efficiency",
            percent: true,
            ..Panel::default()
        };
        let x_end = max_eq as f64 + 0.2;
        let mut chart = panel.chart(root, Ticks::Whole(max_eq), 0.8f64..x_end, 0f64..y_max)?;
        for (level, name) in [(0.9, "90%"), (0.5, "50%")] {
            chart
                .draw_series(guide((0.8, level), (x_end, level)))?
                .label(name)
                .legend(guide_key);
        }
        one_node_line(&mut chart, rows, |r| r.efficiency)?;
        line_per_configuration(
            &mut chart,
            rows,
            |r| r.efficiency.map(|e| (r.equivalent_cores() as f64, e)),
            |alg, c| format!("{}, nodes x {c} {}", algorithm_label(alg), cores_word(c)),
        )?;
        draw_legend(&mut chart, SeriesLabelPosition::LowerLeft, 12)?;
        Ok(())
    })
}

/// Line style of a model curve: network scenarios solid (1 Gbit/s) or
/// dashed (100 Mbit/s), this machine's fitted model dotted and lighter.
#[derive(Clone, Copy)]
enum Dash {
    Solid,
    Dashed,
    Dotted,
}

fn curve_style(s: &Scenario, local: bool) -> (RGBColor, Dash, u32) {
    let color = scheme_color(s.model.scheme);
    if local {
        (shade(color, 1, 2), Dash::Dotted, 2)
    } else if s.link_name.contains("100 Mbit") {
        (color, Dash::Dashed, 1)
    } else {
        (color, Dash::Solid, 2)
    }
}

type LogChart<'a, DB> = Chart<'a, DB, LogCoord<f64>, RangedCoordf64>;

/// Draws `pts` in the given dash style and returns its annotation handle.
fn draw_curve<'a, 'b, DB: DrawingBackend + 'a>(
    chart: &'b mut LogChart<'a, DB>,
    pts: Vec<(f64, f64)>,
    color: RGBColor,
    dash: Dash,
    width: u32,
) -> std::result::Result<&'b mut plotters::chart::SeriesAnno<'a, DB>, String>
where
    DB::ErrorType: 'static,
{
    let style = color.stroke_width(width);
    match dash {
        Dash::Solid => chart.draw_series(LineSeries::new(pts, style)),
        Dash::Dashed => chart.draw_series(DashedLineSeries::new(pts, 8, 4, style)),
        Dash::Dotted => chart.draw_series(DashedLineSeries::new(pts, 2, 3, style)),
    }
    .map_err(|e| e.to_string())
}

/// The cost model's predictions with the measured points.
pub fn model_svg(report: &ModelReport) -> Result<String> {
    render("model.svg", (1200, 520), |root| {
        let root = root.titled(
            &format!(
                "Cost model at fixed global batch {}: {:.2} ms/image{}, {:.1} MB of gradient",
                report.network.first().map_or(0, |s| s.model.global_batch),
                report.per_image_s * 1e3,
                if report.image_time_given {
                    " (given for the target node)"
                } else {
                    " (measured on this machine)"
                },
                report
                    .network
                    .first()
                    .map_or(0.0, |s| s.model.grad_bytes as f64 / 1e6),
            ),
            (FONT, 18),
        )?;
        let (left, right) = root.split_horizontally(600);
        let max_nodes = report.options.max_nodes.max(2) as f64;
        let y_max = report
            .network
            .iter()
            .flat_map(|s| s.curve.iter().map(|p| p.speedup))
            .chain(report.measured.iter().map(|m| m.speedup))
            .fold(2.0, f64::max)
            * 1.1;
        let curves: Vec<(&Scenario, bool)> = report
            .network
            .iter()
            .map(|s| (s, false))
            .chain(report.local.iter().map(|s| (s, true)))
            .collect();

        // Speedup.
        let panel = Panel {
            caption: "speedup T(1)/T(p)",
            x_desc: "nodes (log scale)",
            y_desc: "speedup",
            ..Panel::default()
        };
        let x = (1f64..max_nodes).log_scale();
        let mut chart = panel.chart(&left, Ticks::Log, x, 0f64..y_max)?;
        let ideal_top = max_nodes.min(y_max);
        chart.draw_series(guide((1.0, 1.0), (ideal_top, ideal_top)))?;
        for &(s, local) in &curves {
            let (color, dash, width) = curve_style(s, local);
            let pts = s
                .curve
                .iter()
                .map(|p| (p.nodes as f64, p.speedup))
                .collect();
            draw_curve(&mut chart, pts, color, dash, width)?;
            if let (false, Some(p50)) = (local, s.first_below_50) {
                let x = p50 as f64;
                chart.draw_series(DashedLineSeries::new(
                    vec![(x, 0.0), (x, s.curve[p50 - 1].speedup)],
                    3,
                    3,
                    color.mix(0.7).stroke_width(1),
                ))?;
            }
        }
        for alg in [Algorithm::Ring, Algorithm::Naive] {
            let color = alg_color(alg);
            chart.draw_series(
                report
                    .measured
                    .iter()
                    .filter(|m| m.algorithm == alg)
                    .map(|m| Circle::new((m.nodes as f64, m.speedup), 5, color.filled())),
            )?;
        }

        // Efficiency, with the legend (efficiency falls with p, so the upper
        // right is free).
        let panel = Panel {
            caption: "efficiency S(p)/p; circle: first p under 50%",
            y_label_area: 50,
            x_desc: "nodes (log scale)",
            y_desc: "efficiency",
            percent: true,
            ..Panel::default()
        };
        let x = (1f64..max_nodes).log_scale();
        let mut chart = panel.chart(&right, Ticks::Log, x, 0f64..1.05)?;
        for level in [0.9, 0.5] {
            chart.draw_series(guide((1.0, level), (max_nodes, level)))?;
        }
        for &(s, local) in &curves {
            let (color, dash, width) = curve_style(s, local);
            let pts = s
                .curve
                .iter()
                .map(|p| (p.nodes as f64, p.efficiency))
                .collect();
            let style = color.stroke_width(width);
            let label = format!("{}, {}", s.model.scheme.label(), s.link_name);
            draw_curve(&mut chart, pts, color, dash, width)?
                .label(label)
                .legend(move |(x, y)| {
                    let line = vec![(x, y), (x + 18, y)];
                    match dash {
                        Dash::Solid => PathElement::new(line, style).into_dyn(),
                        Dash::Dashed => DashedPathElement::new(line, 5, 3, style).into_dyn(),
                        Dash::Dotted => DashedPathElement::new(line, 2, 3, style).into_dyn(),
                    }
                });
            if let (false, Some(p50)) = (local, s.first_below_50) {
                let e = s.curve[p50 - 1].efficiency;
                chart.draw_series([EmptyElement::at((p50 as f64, e))
                    + Circle::new((0, 0), 5, color.stroke_width(2))
                    + Text::new(
                        format!("{p50}"),
                        (8, -4),
                        (FONT, 12).into_font().color(&color),
                    )])?;
            }
        }
        for alg in [Algorithm::Ring, Algorithm::Naive] {
            let color = alg_color(alg);
            let pts: Vec<(f64, f64)> = report
                .measured
                .iter()
                .filter(|m| m.algorithm == alg)
                .map(|m| (m.nodes as f64, m.speedup / m.nodes as f64))
                .collect();
            if pts.is_empty() {
                continue;
            }
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 5, color.filled())))?
                .label(format!(
                    "{} measured here ({} {}/rank)",
                    algorithm_label(alg),
                    report.cores,
                    cores_word(report.cores)
                ))
                .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 11)?;
        Ok(())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::analysis::analyse;
    use super::super::projection::ModelOptions;
    use super::super::summary::tests::summary;
    use super::super::summary::Measurement;
    use super::*;

    /// Checks that `svg` is one `<svg>` element whose tags nest properly.
    pub(crate) fn assert_well_formed_svg(svg: &str) {
        let body = svg.trim();
        let start = body.find("<svg").expect("no <svg element");
        assert!(body.ends_with("</svg>"), "does not end with </svg>");
        let mut stack: Vec<String> = Vec::new();
        let mut rest = &body[start..];
        while let Some(open) = rest.find('<') {
            let close = rest[open..].find('>').expect("unterminated tag") + open;
            let tag = &rest[open + 1..close];
            rest = &rest[close + 1..];
            if tag.starts_with('?') || tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack.pop().expect("closing tag without opening");
                assert_eq!(top, name.trim(), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap_or("").to_string();
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "unclosed tags: {stack:?}");
    }

    fn rows() -> Vec<ScalingRow> {
        let mut ms = Vec::new();
        for alg in Algorithm::ALL {
            for (p, c, step) in [(1, 1, 1.0), (1, 2, 0.55), (2, 1, 0.6), (2, 2, 0.4)] {
                let ar = if p > 1 { 0.05 } else { 0.0 };
                ms.push(
                    Measurement::new(
                        alg,
                        p,
                        c,
                        summary(alg, p, c, step, step - ar - 0.02, 0.01, ar),
                    )
                    .unwrap(),
                );
            }
        }
        analyse(&ms, 50_000).unwrap()
    }

    #[test]
    fn all_plots_are_well_formed_svg() {
        let rows = rows();
        for (name, svg) in [
            ("time", time_vs_nodes_svg(&rows).unwrap()),
            ("speedup", speedup_svg(&rows).unwrap()),
            ("efficiency", efficiency_svg(&rows).unwrap()),
        ] {
            assert_well_formed_svg(&svg);
            assert!(svg.contains("<text"), "{name} has no text");
        }
        let time = time_vs_nodes_svg(&rows).unwrap();
        for label in [
            "ring",
            "MPI native",
            "gather-to-root",
            "allreduce",
            "ms per step",
        ] {
            assert!(time.contains(label), "time plot lacks {label}");
        }
        // 3 algorithms x 4 configurations x 4 parts.
        assert!(time.matches("<rect").count() >= 48);
        let speedup = speedup_svg(&rows).unwrap();
        assert!(speedup.contains("1 node x k cores"));
        assert!(speedup.contains("k nodes x 1 core, ring"));
        let report = ModelReport::build(&rows, &ModelOptions::default()).unwrap();
        let model = model_svg(&report).unwrap();
        assert_well_formed_svg(&model);
        assert!(model.contains("Pi 4, 1 Gbit/s"));
        assert!(model.contains("measured here"));
    }

    #[test]
    fn plots_of_partial_sweeps_still_render() {
        // No baseline: no speedup anywhere.
        let only = vec![Measurement::new(
            Algorithm::Mpi,
            2,
            1,
            summary(Algorithm::Mpi, 2, 1, 1.0, 0.8, 0.1, 0.1),
        )
        .unwrap()];
        let rows = analyse(&only, 100).unwrap();
        assert_well_formed_svg(&time_vs_nodes_svg(&rows).unwrap());
        assert_well_formed_svg(&speedup_svg(&rows).unwrap());
        assert_well_formed_svg(&efficiency_svg(&rows).unwrap());
        assert_well_formed_svg(&time_vs_nodes_svg(&[]).unwrap());
    }

    #[test]
    fn the_checker_rejects_broken_svg() {
        let broken = std::panic::catch_unwind(|| assert_well_formed_svg("<svg><g></svg>"));
        assert!(broken.is_err());
        let missing = std::panic::catch_unwind(|| assert_well_formed_svg("<html></html>"));
        assert!(missing.is_err());
    }
}
