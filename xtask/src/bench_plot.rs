//! `cargo xtask bench --plot FILE.svg`: the copy ratio of every bench row, one panel per family,
//! each against the size that decides that family's speed (row length for the row norms, the
//! spatial map H·W for the batch-statistics family), drawn with `plotters`' SVG backend.

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

/// One measured bench row, as the plot needs it.
pub(crate) struct Point {
    pub op: &'static str,
    /// The op's logical shape: `[rows, n]`, `[tokens, heads, d]` or NCHW.
    pub shape: Vec<usize>,
    pub dtype: &'static str,
    pub layout: &'static str,
    /// Op GB/s over the best copy shader's GB/s for the same bytes.
    pub ratio: f64,
}

/// A panel: which rows it holds and what its x axis is.
struct Family {
    title: &'static str,
    x_desc: &'static str,
    holds: fn(&str) -> bool,
    /// The x coordinate of a row of this family.
    x: fn(&[usize]) -> f64,
}

fn last(s: &[usize]) -> f64 {
    *s.last().unwrap_or(&1) as f64
}

fn spatial(s: &[usize]) -> f64 {
    s.iter().skip(2).product::<usize>() as f64
}

fn is_row(op: &str) -> bool {
    matches!(
        op,
        "layer_norm" | "rms_norm" | "add_layer_norm" | "qk_norm_rope"
    )
}

fn is_channel(op: &str) -> bool {
    !is_row(op) && !op.ends_with("_backward") && !op.starts_with("poincare")
}

const FAMILIES: &[Family] = &[
    Family {
        title: "Row norms (forward)",
        x_desc: "row length (elements; head_dim for qk_norm_rope)",
        holds: is_row,
        x: last,
    },
    Family {
        title: "Batch-statistics family (forward)",
        x_desc: "spatial map H*W (elements per sample and channel)",
        holds: is_channel,
        x: spatial,
    },
    Family {
        title: "Row norms (backward)",
        x_desc: "row length (elements)",
        holds: |op| op.ends_with("_backward") && is_row(op.trim_end_matches("_backward")),
        x: last,
    },
    Family {
        title: "Batch-statistics family (backward)",
        x_desc: "spatial map H*W",
        holds: |op| op.ends_with("_backward") && !is_row(op.trim_end_matches("_backward")),
        x: spatial,
    },
    Family {
        title: "Hyperbolic (Poincare ball)",
        x_desc: "spatial map H*W",
        holds: |op| op.starts_with("poincare"),
        x: spatial,
    },
];

/// Twelve colours that stay apart from each other (Tableau 10 plus two).
const COLOURS: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(0, 0, 128),
];

/// The series a row belongs to: op, dtype, layout, and whether it is a decode-sized call (few
/// rows), which would otherwise share an x with the full-sized row of the same length.
fn series_name(p: &Point) -> String {
    let mut s = format!("{} {}", p.op, p.dtype);
    if p.layout != "row-major" && !p.layout.is_empty() {
        s += &format!(" {}", p.layout);
    }
    if is_row(p.op) && p.shape.len() == 2 && p.shape[0] <= 8 {
        s += &format!(" ({} rows)", p.shape[0]);
    }
    s
}

/// The SVG document.
pub(crate) fn svg(points: &[Point]) -> Result<String> {
    let used: Vec<&Family> = FAMILIES
        .iter()
        .filter(|f| points.iter().any(|p| (f.holds)(p.op)))
        .collect();
    let mut out = String::new();
    {
        let cols = used.len().clamp(1, 2);
        let rows = used.len().div_ceil(cols).max(1);
        let size = (760 * cols as u32, 380 * rows as u32);
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        for (area, fam) in root.split_evenly((rows, cols)).iter().zip(&used) {
            let mine: Vec<&Point> = points.iter().filter(|p| (fam.holds)(p.op)).collect();
            panel(area, fam, &mine).map_err(|e| anyhow!("plot {}: {e}", fam.title))?;
        }
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    Ok(out)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type PlotResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// One family's chart on the left of `area`, its legend on the right, outside the data.
fn panel(area: &Area, fam: &Family, pts: &[&Point]) -> PlotResult {
    let mut names: Vec<String> = pts.iter().map(|p| series_name(p)).collect();
    names.sort();
    names.dedup();
    let xs: Vec<f64> = pts.iter().map(|p| (fam.x)(&p.shape)).collect();
    let lo = xs.iter().cloned().fold(f64::INFINITY, f64::min) / 1.5;
    let hi = xs.iter().cloned().fold(0.0, f64::max) * 1.5;
    let top = pts.iter().map(|p| p.ratio).fold(1.0, f64::max) * 1.05;
    let width = area.dim_in_pixel().0;
    let (left, legend) = area.split_horizontally(width * 60 / 100);
    let mut chart = ChartBuilder::on(&left)
        .caption(fam.title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc(fam.x_desc)
        .y_desc("copy ratio (op GB/s / copy GB/s)")
        .x_label_formatter(&|v| format!("{}", v.round() as u64))
        .draw()?;
    // The roofline: a ratio of 1 is a kernel as fast as a plain copy of its bytes.
    chart.draw_series(LineSeries::new(
        [(lo, 1.0), (hi, 1.0)],
        ShapeStyle::from(&RGBColor(160, 160, 160)).stroke_width(1),
    ))?;
    for (i, name) in names.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut line: Vec<(f64, f64)> = pts
            .iter()
            .filter(|p| &series_name(p) == name)
            .map(|p| ((fam.x)(&p.shape), p.ratio))
            .collect();
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart.draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))?;
        for &c in &line {
            marker(&mut chart, i, c, colour)?;
        }
        let y = 40 + 18 * i as i32;
        legend.draw(&PathElement::new(
            vec![(4, y), (28, y)],
            colour.stroke_width(2),
        ))?;
        legend_marker(&legend, i, (16, y), colour)?;
        legend.draw(&Text::new(name.clone(), (34, y - 7), ("sans-serif", 13)))?;
    }
    Ok(())
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<
        plotters::coord::combinators::LogCoord<f64>,
        plotters::coord::types::RangedCoordf64,
    >,
>;

/// The marker of series `i` (shape cycles every four series, colour every twelve).
fn marker(chart: &mut Chart, i: usize, c: (f64, f64), colour: RGBColor) -> PlotResult {
    let style = colour.filled();
    match (i / COLOURS.len() + i) % 4 {
        0 => chart.draw_series([Circle::new(c, 4, style)])?,
        1 => chart.draw_series([TriangleMarker::new(c, 5, style)])?,
        2 => chart.draw_series([Cross::new(c, 4, colour.stroke_width(2))])?,
        _ => {
            chart.draw_series([EmptyElement::at(c) + Rectangle::new([(-3, -3), (3, 3)], style)])?
        }
    };
    Ok(())
}

fn legend_marker(area: &Area, i: usize, c: (i32, i32), colour: RGBColor) -> PlotResult {
    let style = colour.filled();
    match (i / COLOURS.len() + i) % 4 {
        0 => area.draw(&Circle::new(c, 4, style))?,
        1 => area.draw(&TriangleMarker::new(c, 5, style))?,
        2 => area.draw(&Cross::new(c, 4, colour.stroke_width(2)))?,
        _ => area.draw(&(EmptyElement::at(c) + Rectangle::new([(-3, -3), (3, 3)], style)))?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(op: &'static str, shape: &[usize], layout: &'static str, ratio: f64) -> Point {
        Point {
            op,
            shape: shape.to_vec(),
            dtype: "f32",
            layout,
            ratio,
        }
    }

    #[test]
    fn one_panel_per_family_with_every_series_in_its_legend() {
        let pts = [
            point("layer_norm", &[4096, 1024], "row-major", 0.6),
            point("layer_norm", &[1, 4096], "row-major", 0.1),
            point("batch_norm_train", &[8, 64, 28, 28], "NHWC", 0.25),
            point("batch_norm_train", &[8, 64, 28, 28], "NCHW", 0.45),
        ];
        let s = svg(&pts).unwrap();
        assert!(s.contains("Row norms (forward)"));
        assert!(s.contains("Batch-statistics family (forward)"));
        assert!(
            !s.contains("Hyperbolic"),
            "a family without rows has no panel"
        );
        for name in [
            "layer_norm f32",
            "layer_norm f32 (1 rows)",
            "batch_norm_train f32 NHWC",
            "batch_norm_train f32 NCHW",
        ] {
            assert!(s.lines().any(|l| l.trim() == name), "legend lacks {name}");
        }
    }
}
