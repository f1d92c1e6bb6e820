//! Line plots to PNG for the examples: plotters' bitmap backend, text in an embedded DejaVu Sans
//! subset (examples/fonts, so plots draw the same on Linux, macOS and Windows). The legend goes
//! to the corner with the fewest data points; log axes label decades only; a series may carry
//! ± std bars; markers are drawn only for short series.
#![allow(dead_code)]

use std::error::Error;

use plotters::coord::combinators::BindKeyPoints;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// One named line; `std` (empty, or one per point) draws ± std bars.
#[derive(Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub std: Vec<f64>,
}

/// Axes of a plot; `log` puts that axis on a log10 scale (values must be > 0).
pub struct Axes<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_x: bool,
    pub log_y: bool,
}

/// Series longer than this are drawn as lines alone.
const MAX_MARKERS: usize = 60;

const FONT: &[u8] = include_bytes!("../fonts/DejaVuSans-subset.ttf");

fn register_font() -> Result<(), Box<dyn Error>> {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    }) {
        Ok(())
    } else {
        Err("the embedded DejaVu Sans font did not load".into())
    }
}

/// A short tick label: 0.25, 1024, 3.0e-5.
fn tick(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || (1e-3..1e5).contains(&a) {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    } else {
        format!("{v:.1e}")
    }
}

/// Labelled ticks of a log axis over `[lo, hi]`: the data's own values when there are few
/// (powers of two such as M or L), else decades, or 1-2-5 steps when under two decades. Only these
/// are labelled, so labels never run together.
fn log_ticks(lo: f64, hi: f64, data: &[f64]) -> Vec<f64> {
    let mut xs: Vec<f64> = data.iter().copied().filter(|v| *v > 0.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    if (2..=12).contains(&xs.len()) {
        return xs;
    }
    let steps: &[f64] = if hi / lo >= 100.0 {
        &[1.0]
    } else if hi / lo >= 10.0 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    };
    let mut out = vec![];
    let mut p = 10f64.powf(lo.log10().floor());
    while p <= hi {
        out.extend(
            steps
                .iter()
                .map(|s| s * p)
                .filter(|v| (lo..=hi).contains(v)),
        );
        p *= 10.0;
    }
    out
}

fn bounds(vals: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let vals = vals.filter(|v| v.is_finite() && (!log || *v > 0.0));
    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return (if log { 1e-3 } else { 0.0 }, 1.0);
    }
    if log {
        (lo / 1.2, hi * 1.2)
    } else {
        let pad = ((hi - lo) * 0.05).max(1e-12);
        (lo - pad, hi + pad)
    }
}

/// Fraction of the plot's height the legend takes.
fn legend_height(series: &[Series]) -> f64 {
    (0.08 * series.len() as f64).min(0.9)
}

/// The legend corner holding the fewest points (in the plotted, possibly log, coordinates),
/// and how many points it holds.
fn emptiest_corner(
    series: &[Series],
    axes: &Axes<'_>,
    bx: (f64, f64),
    by: (f64, f64),
) -> (SeriesLabelPosition, usize) {
    let norm = |v: f64, (lo, hi): (f64, f64), log: bool| {
        if log {
            (v.ln() - lo.ln()) / (hi.ln() - lo.ln())
        } else {
            (v - lo) / (hi - lo)
        }
    };
    let corners = [
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::LowerLeft, false, false),
    ];
    // The legend box: about 45% of the width, 8% of the height per entry.
    let h = legend_height(series);
    let count = |right: bool, upper: bool| {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| {
                let x = norm(p.0, bx, axes.log_x);
                let y = norm(p.1, by, axes.log_y);
                (if right { x > 0.55 } else { x < 0.45 })
                    && (if upper { y > 1.0 - h } else { y < h })
            })
            .count()
    };
    corners
        .into_iter()
        .map(|(p, r, u)| (p, count(r, u)))
        .min_by_key(|&(_, n)| n)
        .unwrap_or((SeriesLabelPosition::UpperRight, 0))
}

#[allow(clippy::too_many_arguments)]
fn draw<X, Y>(
    path: &str,
    axes: &Axes<'_>,
    series: &[Series],
    x: X,
    y: Y,
    legend: SeriesLabelPosition,
) -> Result<(), Box<dyn Error>>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let root = BitMapBackend::new(path, (1000, 650)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(axes.title, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .x_desc(axes.x_label)
        .y_desc(axes.y_label)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color =
            Palette99::pick(i).stroke_width(if s.points.len() > MAX_MARKERS { 2 } else { 3 });
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color))?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 20, y)],
                    Palette99::pick(i).stroke_width(3),
                )
            });
        if s.points.len() <= MAX_MARKERS {
            chart.draw_series(
                s.points
                    .iter()
                    .map(|&p| Circle::new(p, 3, Palette99::pick(i).filled())),
            )?;
        }
        if s.std.len() == s.points.len() {
            chart.draw_series(s.points.iter().zip(&s.std).map(|(&(x, y), &sd)| {
                let lo = if axes.log_y {
                    (y - sd).max(y * 1e-3)
                } else {
                    y - sd
                };
                ErrorBar::new_vertical(x, lo, y, y + sd, Palette99::pick(i).stroke_width(2), 8)
            }))?;
        }
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Writes a line plot of `series` to the PNG at `path`.
pub fn line_plot(path: &str, axes: &Axes<'_>, series: &[Series]) -> Result<(), Box<dyn Error>> {
    register_font()?;
    let (x0, x1) = bounds(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.0)),
        axes.log_x,
    );
    // y ± std is inside the frame too.
    let ys = series.iter().flat_map(|s| {
        s.points.iter().enumerate().flat_map(move |(i, p)| {
            let sd = s.std.get(i).copied().unwrap_or(0.0);
            [p.1 - sd, p.1, p.1 + sd]
        })
    });
    let (y0, mut y1) = bounds(ys, axes.log_y);
    // No empty corner: raise the top so the legend gets a band of its own above the data.
    let (mut legend, crowded) = emptiest_corner(series, axes, (x0, x1), (y0, y1));
    if crowded > 0 {
        let h = legend_height(series);
        y1 = if axes.log_y {
            y0 * (y1 / y0).powf(1.0 / (1.0 - h))
        } else {
            y0 + (y1 - y0) / (1.0 - h)
        };
        legend = SeriesLabelPosition::UpperRight;
    }
    let xdata: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let lx = || {
        (x0..x1)
            .log_scale()
            .with_key_points(log_ticks(x0, x1, &xdata))
    };
    let ly = || (y0..y1).log_scale().with_key_points(log_ticks(y0, y1, &[]));
    match (axes.log_x, axes.log_y) {
        (false, false) => draw(path, axes, series, x0..x1, y0..y1, legend),
        (true, false) => draw(path, axes, series, lx(), y0..y1, legend),
        (false, true) => draw(path, axes, series, x0..x1, ly(), legend),
        (true, true) => draw(path, axes, series, lx(), ly(), legend),
    }
}
