//! A small chart toolkit for experiment reports: stacked bars, XY line charts (optionally
//! log-log, with labelled horizontal reference lines) and scatter plots with a `y = x` line.
//!
//! Every chart is drawn with plotters into an in-memory RGB buffer and encoded as PNG with the
//! `png` crate, so the same input gives the same bytes (reports are checked byte for byte). The
//! font is DejaVu Sans, embedded with `include_bytes!` and registered once: plotters' `ttf`
//! feature (fontconfig, system fonts) is off on purpose, and a missing font would otherwise give
//! a blank image.

use plotters::coord::Shift;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::sync::OnceLock;
use thiserror::Error;

/// DejaVu Sans (Bitstream Vera derivative, permissive licence in `assets/fonts/`).
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChartError {
    #[error("chart font: the embedded TTF could not be loaded")]
    Font,
    #[error("chart `{title}`: {reason}")]
    Invalid { title: String, reason: String },
    #[error("chart `{title}`: drawing failed: {message}")]
    Draw { title: String, message: String },
    #[error("chart `{title}`: PNG encoding failed: {message}")]
    Encode { title: String, message: String },
}

fn register_font() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font_style(FontStyle::Normal).is_ok());
    if ok { Ok(()) } else { Err(ChartError::Font) }
}

fn register_font_style(style: FontStyle) -> Result<(), ()> {
    plotters::style::register_font(FAMILY, style, FONT).map_err(|_| ())
}

/// Okabe-Ito colours (distinguishable with colour-vision deficiencies), then a few more.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

/// Pixel size of a chart. At least 1000 x 600 keeps text legible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl Size {
    pub const MIN: Size = Size {
        width: 1000,
        height: 600,
    };
}

impl Default for Size {
    fn default() -> Self {
        Size {
            width: 1400,
            height: 800,
        }
    }
}

/// One stack segment (e.g. "Weights") with one value per category.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub name: String,
    pub values: Vec<f64>,
}

/// One bar per category, segments stacked bottom to top in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StackedBars {
    pub title: String,
    /// Category labels under the bars; a label is broken onto a second line before ` (`.
    pub categories: Vec<String>,
    pub segments: Vec<Segment>,
    /// The y axis title, with its unit (`Memory (MiB)`).
    pub y_label: String,
    pub size: Size,
}

/// A named series of points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A horizontal line across the plot with a label at its right end (e.g. "80 GiB GPU").
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceLine {
    pub y: f64,
    pub label: String,
}

/// Where the legend box goes, inside the plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Legend {
    #[default]
    UpperLeft,
    UpperRight,
    LowerLeft,
    LowerRight,
}

impl Legend {
    fn position(self) -> SeriesLabelPosition {
        match self {
            Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
            Legend::UpperRight => SeriesLabelPosition::UpperRight,
            Legend::LowerLeft => SeriesLabelPosition::LowerLeft,
            Legend::LowerRight => SeriesLabelPosition::LowerRight,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    #[default]
    Linear,
    Log,
}

/// Lines through each series' points, with a marker per point.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    pub y_scale: Scale,
    pub series: Vec<Series>,
    pub reference_lines: Vec<ReferenceLine>,
    pub legend: Legend,
    pub size: Size,
}

/// Points only, and optionally the `y = x` diagonal (predicted vs measured).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scatter {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub identity_line: bool,
    pub legend: Legend,
    pub size: Size,
}

fn invalid(title: &str, reason: impl Into<String>) -> ChartError {
    ChartError::Invalid {
        title: title.to_string(),
        reason: reason.into(),
    }
}

fn check_size(title: &str, size: Size) -> Result<(), ChartError> {
    if size.width < Size::MIN.width || size.height < Size::MIN.height {
        return Err(invalid(
            title,
            format!(
                "size {}x{} is below the legible minimum {}x{}",
                size.width,
                size.height,
                Size::MIN.width,
                Size::MIN.height
            ),
        ));
    }
    if size.width > 8000 || size.height > 8000 {
        return Err(invalid(title, "size above 8000 px"));
    }
    Ok(())
}

/// Draw into a white RGB buffer with `draw`, then encode it as PNG.
fn render(
    title: &str,
    size: Size,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<Vec<u8>, ChartError> {
    register_font()?;
    check_size(title, size)?;
    let mut buffer = vec![255u8; size.width as usize * size.height as usize * 3];
    {
        let root =
            BitMapBackend::with_buffer(&mut buffer, (size.width, size.height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string()).and_then(|()| {
            draw(&root)?;
            root.present().map_err(|e| e.to_string())
        })
    }
    .map_err(|message| ChartError::Draw {
        title: title.to_string(),
        message,
    })?;
    encode_png(title, size, &buffer)
}

fn encode_png(title: &str, size: Size, rgb: &[u8]) -> Result<Vec<u8>, ChartError> {
    let err = |e: png::EncodingError| ChartError::Encode {
        title: title.to_string(),
        message: e.to_string(),
    };
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, size.width, size.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Best);
        let mut writer = encoder.write_header().map_err(err)?;
        writer.write_image_data(rgb).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    Ok(out)
}

fn font(size: u32) -> FontDesc<'static> {
    (FAMILY, size).into_font()
}

fn to_string_err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Tick text: SI suffixes from a thousand up (`1.5M`, `20G`), trailing zeros trimmed.
pub fn tick_label(v: f64) -> String {
    const SUFFIXES: [(f64, &str); 4] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    let trim = |x: f64| {
        let s = format!("{x:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" {
            "0".to_string()
        } else {
            s.to_string()
        }
    };
    for (scale, suffix) in SUFFIXES {
        if v.abs() >= scale {
            return format!("{}{suffix}", trim(v / scale));
        }
    }
    if v != 0.0 && v.abs() < 1e-3 {
        return format!("{v:.0e}");
    }
    trim(v)
}

/// Rounded-up axis end: 1, 2 or 5 times a power of ten above `max`.
fn nice_ceiling(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if step * magnitude >= max * 1.0001 {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// One bar per category, segments stacked; values are in the y axis unit.
pub fn stacked_bars(spec: &StackedBars) -> Result<Vec<u8>, ChartError> {
    let title = spec.title.as_str();
    let n = spec.categories.len();
    if n == 0 || spec.segments.is_empty() {
        return Err(invalid(title, "no categories or no segments"));
    }
    for s in &spec.segments {
        if s.values.len() != n {
            return Err(invalid(
                title,
                format!(
                    "segment `{}` has {} values for {n} categories",
                    s.name,
                    s.values.len()
                ),
            ));
        }
        if s.values.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(invalid(
                title,
                format!("segment `{}` has a negative or non-finite value", s.name),
            ));
        }
    }
    let totals: Vec<f64> = (0..n)
        .map(|i| spec.segments.iter().map(|s| s.values[i]).sum())
        .collect();
    let y_max = nice_ceiling(totals.iter().copied().fold(0.0, f64::max) * 1.12);
    render(title, spec.size, |root| {
        let (plot, labels) = root.split_vertically(spec.size.height - 90);
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, font(30))
            .margin(20)
            .margin_right(40)
            .x_label_area_size(10)
            .y_label_area_size(110)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..y_max)
            .map_err(to_string_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(spec.y_label.as_str())
            .y_label_style(font(18))
            .axis_desc_style(font(20))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.12))
            .draw()
            .map_err(to_string_err)?;
        for (k, seg) in spec.segments.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            chart
                .draw_series((0..n).map(|i| {
                    let below: f64 = spec.segments[..k].iter().map(|s| s.values[i]).sum();
                    let x = i as f64;
                    Rectangle::new(
                        [(x - 0.32, below), (x + 0.32, below + seg.values[i])],
                        color.filled(),
                    )
                }))
                .map_err(to_string_err)?
                .label(seg.name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 7), (x + 16, y + 7)], color.filled())
                });
        }
        // Totals above each bar.
        chart
            .draw_series((0..n).map(|i| {
                Text::new(
                    format!("{:.2}", totals[i]),
                    (i as f64, totals[i] + y_max * 0.012),
                    font(17)
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))
            .map_err(to_string_err)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(font(18))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(to_string_err)?;
        // Category labels, up to two lines, centred under each bar.
        for (i, label) in spec.categories.iter().enumerate() {
            let (px, _) = chart.backend_coord(&(i as f64, 0.0));
            let lines: Vec<&str> = match label.find(" (") {
                Some(at) => vec![&label[..at], label[at + 1..].trim()],
                None => vec![label.as_str()],
            };
            for (row, line) in lines.iter().enumerate() {
                labels
                    .draw(&Text::new(
                        line.to_string(),
                        (px, 8 + 24 * row as i32),
                        font(18)
                            .color(&BLACK)
                            .pos(Pos::new(HPos::Center, VPos::Top)),
                    ))
                    .map_err(to_string_err)?;
            }
        }
        Ok(())
    })
}

fn check_series(
    title: &str,
    series: &[Series],
    log_x: bool,
    log_y: bool,
) -> Result<(), ChartError> {
    if series.is_empty() || series.iter().all(|s| s.points.is_empty()) {
        return Err(invalid(title, "no points"));
    }
    for s in series {
        for &(x, y) in &s.points {
            if !x.is_finite() || !y.is_finite() {
                return Err(invalid(
                    title,
                    format!("series `{}` has a non-finite point", s.name),
                ));
            }
            if (log_x && x <= 0.0) || (log_y && y <= 0.0) {
                return Err(invalid(
                    title,
                    format!(
                        "series `{}` has a point at or below 0 on a log axis",
                        s.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Data bounds padded for display: 5% on linear axes, a factor of 1.5 on log axes.
fn padded(lo: f64, hi: f64, scale: Scale) -> (f64, f64) {
    match scale {
        Scale::Log => (lo / 1.5, hi * 1.5),
        Scale::Linear => {
            let span = if hi > lo { hi - lo } else { hi.abs().max(1.0) };
            (lo - span * 0.05, hi + span * 0.05)
        }
    }
}

fn bounds(points: impl Iterator<Item = f64>) -> (f64, f64) {
    points.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// Everything an XY chart draws, independent of the axis types.
struct XyPlot<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    series: &'a [Series],
    lines: bool,
    reference_lines: &'a [ReferenceLine],
    identity: Option<(f64, f64)>,
    x_range: (f64, f64),
    legend: Legend,
}

fn draw_xy<X, Y>(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    plot: &XyPlot<'_>,
    x: X,
    y: Y,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .caption(plot.title, font(30))
        .margin(20)
        .margin_right(40)
        .x_label_area_size(70)
        .y_label_area_size(110)
        .build_cartesian_2d(x, y)
        .map_err(to_string_err)?;
    chart
        .configure_mesh()
        .x_desc(plot.x_label)
        .y_desc(plot.y_label)
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&|v| tick_label(*v))
        .label_style(font(18))
        .axis_desc_style(font(20))
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(to_string_err)?;
    if let Some((lo, hi)) = plot.identity {
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(LineSeries::new([(lo, lo), (hi, hi)], grey.stroke_width(2)))
            .map_err(to_string_err)?
            .label("y = x")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], grey.stroke_width(2)));
    }
    for line in plot.reference_lines {
        let red = RGBColor(180, 30, 30);
        let (x0, x1) = plot.x_range;
        chart
            .draw_series(LineSeries::new(
                [(x0, line.y), (x1, line.y)],
                red.mix(0.8).stroke_width(2),
            ))
            .map_err(to_string_err)?;
        chart
            .draw_series([Text::new(
                line.label.clone(),
                (x1, line.y),
                font(18)
                    .color(&red)
                    .pos(Pos::new(HPos::Right, VPos::Bottom)),
            )])
            .map_err(to_string_err)?;
    }
    for (k, s) in plot.series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        if plot.lines {
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(3),
                ))
                .map_err(to_string_err)?;
        }
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 5, color.filled())))
            .map_err(to_string_err)?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new([(0, 0), (24, 0)], color.stroke_width(3))
                    + Circle::new((12, 0), 5, color.filled())
            });
    }
    chart
        .configure_series_labels()
        .position(plot.legend.position())
        .label_font(font(18))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(to_string_err)?;
    Ok(())
}

fn axis_draw(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    plot: &XyPlot<'_>,
    (x_scale, x_lo, x_hi): (Scale, f64, f64),
    (y_scale, y_lo, y_hi): (Scale, f64, f64),
) -> Result<(), String> {
    let lin = |lo: f64, hi: f64| RangedCoordf64::from(lo..hi);
    let log = |lo: f64, hi: f64| -> LogCoord<f64> { (lo..hi).log_scale().into() };
    match (x_scale, y_scale) {
        (Scale::Linear, Scale::Linear) => draw_xy(root, plot, lin(x_lo, x_hi), lin(y_lo, y_hi)),
        (Scale::Linear, Scale::Log) => draw_xy(root, plot, lin(x_lo, x_hi), log(y_lo, y_hi)),
        (Scale::Log, Scale::Linear) => draw_xy(root, plot, log(x_lo, x_hi), lin(y_lo, y_hi)),
        (Scale::Log, Scale::Log) => draw_xy(root, plot, log(x_lo, x_hi), log(y_lo, y_hi)),
    }
}

/// Several series as lines with point markers, a legend, optional log axes and labelled
/// horizontal reference lines.
pub fn line_chart(spec: &LineChart) -> Result<Vec<u8>, ChartError> {
    let title = spec.title.as_str();
    let log_x = spec.x_scale == Scale::Log;
    let log_y = spec.y_scale == Scale::Log;
    check_series(title, &spec.series, log_x, log_y)?;
    for r in &spec.reference_lines {
        if !r.y.is_finite() || (log_y && r.y <= 0.0) {
            return Err(invalid(
                title,
                format!("reference line `{}` is not drawable", r.label),
            ));
        }
    }
    let points = || spec.series.iter().flat_map(|s| s.points.iter());
    let (x_lo, x_hi) = padded_bounds(bounds(points().map(|p| p.0)), spec.x_scale);
    let (y_lo, y_hi) = padded_bounds(
        bounds(
            points()
                .map(|p| p.1)
                .chain(spec.reference_lines.iter().map(|r| r.y)),
        ),
        spec.y_scale,
    );
    render(title, spec.size, |root| {
        let plot = XyPlot {
            title,
            x_label: &spec.x_label,
            y_label: &spec.y_label,
            series: &spec.series,
            lines: true,
            reference_lines: &spec.reference_lines,
            identity: None,
            x_range: (x_lo, x_hi),
            legend: spec.legend,
        };
        axis_draw(
            root,
            &plot,
            (spec.x_scale, x_lo, x_hi),
            (spec.y_scale, y_lo, y_hi),
        )
    })
}

fn padded_bounds((lo, hi): (f64, f64), scale: Scale) -> (f64, f64) {
    padded(lo, hi, scale)
}

/// Points of each series and, if asked, the `y = x` line; both axes share one range so the
/// diagonal is the line of perfect agreement.
pub fn scatter(spec: &Scatter) -> Result<Vec<u8>, ChartError> {
    let title = spec.title.as_str();
    check_series(title, &spec.series, false, false)?;
    let (lo, hi) = bounds(
        spec.series
            .iter()
            .flat_map(|s| s.points.iter().flat_map(|p| [p.0, p.1])),
    );
    let (lo, hi) = padded(lo.min(0.0), hi, Scale::Linear);
    render(title, spec.size, |root| {
        let plot = XyPlot {
            title,
            x_label: &spec.x_label,
            y_label: &spec.y_label,
            series: &spec.series,
            lines: false,
            reference_lines: &[],
            identity: spec.identity_line.then_some((lo, hi)),
            x_range: (lo, hi),
            legend: spec.legend,
        };
        axis_draw(
            root,
            &plot,
            (Scale::Linear, lo, hi),
            (Scale::Linear, lo, hi),
        )
    })
}

/// One regime's step: bars of live memory at each moment, stacked by category, with the peak
/// marked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TimelinePanel {
    /// The regime, shown above its panel.
    pub title: String,
    /// The moments' labels, in order (one bar each).
    pub moments: Vec<String>,
    /// Where a group of moments starts and its name (`first step` at 0, `steady step` at 7).
    pub groups: Vec<(usize, String)>,
    /// One stack segment per category, one value per moment.
    pub categories: Vec<Segment>,
    /// The moment marked as the peak, and its label.
    pub peak: (usize, String),
}

/// Live memory through the step, one panel per regime, sharing the legend of categories.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TimelineChart {
    pub title: String,
    pub panels: Vec<TimelinePanel>,
    /// The y axis title, with its unit (`Live memory (GiB)`).
    pub y_label: String,
    pub size: Size,
}

impl TimelineChart {
    /// The height the chart takes for `panels` panels: a title strip and 330 px per panel.
    pub fn height_for(panels: usize) -> u32 {
        TIMELINE_HEAD + 330 * panels.max(2) as u32
    }
}

fn check_timeline(spec: &TimelineChart) -> Result<(), ChartError> {
    let title = spec.title.as_str();
    if spec.panels.is_empty() {
        return Err(invalid(title, "no panels"));
    }
    for p in &spec.panels {
        let n = p.moments.len();
        if n == 0 || p.categories.is_empty() {
            return Err(invalid(title, format!("panel `{}` is empty", p.title)));
        }
        if p.peak.0 >= n {
            return Err(invalid(
                title,
                format!("panel `{}`: peak past the moments", p.title),
            ));
        }
        for c in &p.categories {
            if c.values.len() != n || c.values.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(invalid(
                    title,
                    format!(
                        "panel `{}`: category `{}` does not have one finite, non-negative value per moment",
                        p.title, c.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Live memory through the step: per panel, one stacked bar per moment, the groups (first and
/// steady step) separated by a gap, the peak's bar outlined and labelled.
pub fn timeline_chart(spec: &TimelineChart) -> Result<Vec<u8>, ChartError> {
    check_timeline(spec)?;
    let title = spec.title.as_str();
    render(title, spec.size, |root| {
        let (head, body) = root.split_vertically(TIMELINE_HEAD);
        head.draw(&Text::new(
            title.to_string(),
            (spec.size.width as i32 / 2, 12),
            font(28)
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(to_string_err)?;
        // The categories' legend, one row under the title.
        let names: Vec<&str> = spec.panels[0]
            .categories
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let step = 190;
        let mut x = spec.size.width as i32 / 2 - step * names.len() as i32 / 2;
        for (k, name) in names.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            head.draw(&Rectangle::new([(x, 54), (x + 18, 72)], color.filled()))
                .map_err(to_string_err)?;
            head.draw(&Text::new(
                name.to_string(),
                (x + 26, 63),
                font(17)
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(to_string_err)?;
            x += step;
        }
        let panels = body.split_evenly((spec.panels.len(), 1));
        for (panel, area) in spec.panels.iter().zip(&panels) {
            draw_timeline_panel(area, panel, &spec.y_label)?;
        }
        Ok(())
    })
}

/// The title and legend strip above the panels.
const TIMELINE_HEAD: u32 = 90;

/// The x position of moment `i`: groups after the first are shifted right by half a bar.
fn moment_x(panel: &TimelinePanel, i: usize) -> f64 {
    let group = panel.groups.iter().filter(|(start, _)| *start <= i).count();
    i as f64 + 0.6 * group.saturating_sub(1) as f64
}

fn draw_timeline_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    panel: &TimelinePanel,
    y_label: &str,
) -> Result<(), String> {
    let n = panel.moments.len();
    let totals: Vec<f64> = (0..n)
        .map(|i| panel.categories.iter().map(|c| c.values[i]).sum())
        .collect();
    let y_max = nice_ceiling(totals.iter().copied().fold(0.0, f64::max) * 1.25);
    let x_max = moment_x(panel, n - 1) + 0.5;
    let (plot, labels) = area.split_vertically(area.dim_in_pixel().1 - 34);
    let mut chart = ChartBuilder::on(&plot)
        .caption(panel.title.as_str(), font(22))
        .margin(8)
        .margin_right(40)
        .x_label_area_size(4)
        .y_label_area_size(110)
        .build_cartesian_2d(-0.5f64..x_max, 0f64..y_max)
        .map_err(to_string_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(5)
        .y_desc(y_label)
        .y_label_formatter(&|v| tick_label(*v))
        .y_label_style(font(16))
        .axis_desc_style(font(17))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(to_string_err)?;
    for (k, category) in panel.categories.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        chart
            .draw_series((0..n).map(|i| {
                let below: f64 = panel.categories[..k].iter().map(|c| c.values[i]).sum();
                let x = moment_x(panel, i);
                Rectangle::new(
                    [(x - 0.36, below), (x + 0.36, below + category.values[i])],
                    color.filled(),
                )
            }))
            .map_err(to_string_err)?;
    }
    let (peak, peak_label) = (&panel.peak.0, &panel.peak.1);
    let px = moment_x(panel, *peak);
    let red = RGBColor(180, 30, 30);
    chart
        .draw_series([Rectangle::new(
            [(px - 0.42, 0.0), (px + 0.42, totals[*peak])],
            red.stroke_width(3),
        )])
        .map_err(to_string_err)?;
    chart
        .draw_series([Text::new(
            peak_label.clone(),
            (px, totals[*peak] + y_max * 0.02),
            font(17)
                .color(&red)
                .pos(Pos::new(HPos::Center, VPos::Bottom)),
        )])
        .map_err(to_string_err)?;
    for (start, name) in &panel.groups {
        let x = moment_x(panel, *start) - 0.45;
        chart
            .draw_series([Text::new(
                name.clone(),
                (x, y_max * 0.97),
                font(16)
                    .color(&BLACK.mix(0.7))
                    .pos(Pos::new(HPos::Left, VPos::Top)),
            )])
            .map_err(to_string_err)?;
    }
    for (i, label) in panel.moments.iter().enumerate() {
        let (x, _) = chart.backend_coord(&(moment_x(panel, i), 0.0));
        labels
            .draw(&Text::new(
                label.clone(),
                (x, 4),
                font(13)
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(to_string_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decoded RGB pixels of a PNG, and its size.
    fn decode(bytes: &[u8]) -> (u32, u32, Vec<[u8; 3]>) {
        let decoder = png::Decoder::new(bytes);
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let pixels = buf[..info.buffer_size()]
            .chunks_exact(3)
            .map(|c| [c[0], c[1], c[2]])
            .collect();
        (info.width, info.height, pixels)
    }

    /// Not blank: plenty of non-white pixels, several colours, and dark (text) pixels.
    fn assert_legible(bytes: &[u8], width: u32, height: u32, min_colours: usize) {
        let (w, h, pixels) = decode(bytes);
        assert_eq!((w, h), (width, height));
        let non_white = pixels.iter().filter(|p| **p != [255, 255, 255]).count();
        assert!(
            non_white > pixels.len() / 50,
            "only {non_white} non-white pixels"
        );
        let dark = pixels.iter().filter(|p| p.iter().all(|&c| c < 60)).count();
        assert!(dark > 2_000, "only {dark} dark (text) pixels");
        let mut colours: Vec<[u8; 3]> = pixels.clone();
        colours.sort_unstable();
        colours.dedup();
        assert!(
            colours.len() >= min_colours,
            "only {} colours",
            colours.len()
        );
    }

    fn count_colour(bytes: &[u8], colour: RGBColor) -> usize {
        let (_, _, pixels) = decode(bytes);
        pixels
            .iter()
            .filter(|p| **p == [colour.0, colour.1, colour.2])
            .count()
    }

    fn bars() -> StackedBars {
        StackedBars {
            title: "Memory per regime".into(),
            categories: vec![
                "Full FT".into(),
                "QLoRA r=8 (all Linears, base in NF4)".into(),
            ],
            segments: vec![
                Segment {
                    name: "Weights".into(),
                    values: vec![3.0, 1.0],
                },
                Segment {
                    name: "Activations".into(),
                    values: vec![2.0, 2.0],
                },
            ],
            y_label: "Memory (MiB)".into(),
            size: Size::default(),
        }
    }

    #[test]
    fn stacked_bars_are_legible_and_deterministic() {
        let png = stacked_bars(&bars()).unwrap();
        assert_legible(&png, 1400, 800, 50);
        // Both segment colours fill real area.
        assert!(count_colour(&png, PALETTE[0]) > 10_000);
        assert!(count_colour(&png, PALETTE[1]) > 10_000);
        assert_eq!(png, stacked_bars(&bars()).unwrap());
    }

    #[test]
    fn stacked_bars_reject_mismatched_segments() {
        let mut spec = bars();
        spec.segments[1].values.pop();
        assert_eq!(
            stacked_bars(&spec).unwrap_err().to_string(),
            "chart `Memory per regime`: segment `Activations` has 1 values for 2 categories"
        );
    }

    #[test]
    fn tick_labels_are_compact() {
        assert_eq!(tick_label(1_000_000.0), "1M");
        assert_eq!(tick_label(2_500.0), "2.5k");
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(80.0), "80");
        assert_eq!(tick_label(0.0001), "1e-4");
    }

    #[test]
    fn small_charts_are_refused() {
        let mut spec = bars();
        spec.size = Size {
            width: 640,
            height: 480,
        };
        assert!(
            stacked_bars(&spec)
                .unwrap_err()
                .to_string()
                .contains("below the legible minimum")
        );
    }

    #[test]
    fn log_log_line_chart_with_reference_line() {
        let spec = LineChart {
            title: "Memory vs parameters".into(),
            x_label: "Parameters".into(),
            y_label: "Memory (GiB)".into(),
            x_scale: Scale::Log,
            y_scale: Scale::Log,
            series: vec![
                Series {
                    name: "Full FT".into(),
                    points: vec![(1e6, 0.016), (1e8, 1.6), (1e10, 160.0)],
                },
                Series {
                    name: "QLoRA".into(),
                    points: vec![(1e6, 0.001), (1e8, 0.1), (1e10, 10.0)],
                },
            ],
            reference_lines: vec![ReferenceLine {
                y: 80.0,
                label: "80 GiB GPU".into(),
            }],
            legend: Legend::UpperLeft,
            size: Size::default(),
        };
        let png = line_chart(&spec).unwrap();
        assert_legible(&png, 1400, 800, 30);
        assert!(count_colour(&png, PALETTE[0]) > 500);
        assert!(count_colour(&png, PALETTE[1]) > 500);
        let mut bad = spec.clone();
        bad.series[0].points[0].1 = 0.0;
        assert!(
            line_chart(&bad)
                .unwrap_err()
                .to_string()
                .contains("log axis")
        );
    }

    #[test]
    fn scatter_with_identity_line() {
        let spec = Scatter {
            title: "Predicted vs measured".into(),
            x_label: "Measured (MiB)".into(),
            y_label: "Predicted (MiB)".into(),
            series: vec![Series {
                name: "activations".into(),
                points: vec![(1.0, 1.1), (5.0, 4.8), (10.0, 10.3)],
            }],
            identity_line: true,
            legend: Legend::LowerRight,
            size: Size {
                width: 1000,
                height: 1000,
            },
        };
        let png = scatter(&spec).unwrap();
        assert_legible(&png, 1000, 1000, 20);
        assert!(count_colour(&png, PALETTE[0]) > 200);
    }
}
