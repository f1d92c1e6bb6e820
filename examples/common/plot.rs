//! Line plots to PNG for the examples: plotters' bitmap backend, text in DejaVu Sans read from
//! the system's fonts (Debian: fonts-dejavu-core).
#![allow(dead_code)]

use std::error::Error;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// One named line.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Axes of a plot; `log` puts that axis on a log10 scale (values must be > 0).
pub struct Axes<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_x: bool,
    pub log_y: bool,
}

const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn register_font() -> Result<(), Box<dyn Error>> {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        FONTS.iter().any(|p| match std::fs::read(p) {
            Ok(b) => plotters::style::register_font(
                "sans-serif",
                FontStyle::Normal,
                Box::leak(b.into_boxed_slice()),
            )
            .is_ok(),
            Err(_) => false,
        })
    });
    if ok {
        Ok(())
    } else {
        Err("no DejaVu Sans font found (Debian: apt-get install fonts-dejavu-core)".into())
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

fn bounds(series: &[Series], f: impl Fn(&(f64, f64)) -> f64, log: bool) -> (f64, f64) {
    let vals = series
        .iter()
        .flat_map(|s| s.points.iter().map(&f))
        .filter(|v| v.is_finite() && (!log || *v > 0.0));
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

fn draw<X, Y>(
    path: &str,
    axes: &Axes<'_>,
    series: &[Series],
    x: X,
    y: Y,
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
        let color = Palette99::pick(i).stroke_width(3);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color))?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 20, y)],
                    Palette99::pick(i).stroke_width(3),
                )
            });
        chart.draw_series(
            s.points
                .iter()
                .map(|&p| Circle::new(p, 3, Palette99::pick(i).filled())),
        )?;
    }
    chart
        .configure_series_labels()
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
    let (x0, x1) = bounds(series, |p| p.0, axes.log_x);
    let (y0, y1) = bounds(series, |p| p.1, axes.log_y);
    match (axes.log_x, axes.log_y) {
        (false, false) => draw(path, axes, series, x0..x1, y0..y1),
        (true, false) => draw(path, axes, series, (x0..x1).log_scale(), y0..y1),
        (false, true) => draw(path, axes, series, x0..x1, (y0..y1).log_scale()),
        (true, true) => draw(
            path,
            axes,
            series,
            (x0..x1).log_scale(),
            (y0..y1).log_scale(),
        ),
    }
}
