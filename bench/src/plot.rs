//! Draws published, received and acked per second over the whole run.

use std::path::Path;

use plotters::prelude::*;

use super::counters::Sample;
use super::BenchError;

/// Fonts tried for the labels; without one the plot has no text.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Per-second rates at one time: (seconds, published, received, acked).
pub type Rates = (f64, f64, f64, f64);

/// One line of the plot: its label, colour, and which rate it draws.
type Series = (&'static str, RGBColor, fn(&Rates) -> f64);

/// Per-second rates between consecutive samples.
pub fn rates(samples: &[Sample]) -> Vec<Rates> {
    samples
        .windows(2)
        .map(|pair| {
            let (a, b) = (pair[0], pair[1]);
            let dt = (b.at - a.at).as_secs_f64().max(1e-6);
            (
                b.at.as_secs_f64(),
                (b.published - a.published) as f64 / dt,
                (b.received - a.received) as f64 / dt,
                (b.acked - a.acked) as f64 / dt,
            )
        })
        .collect()
}

fn load_font() -> bool {
    for path in FONTS {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Writes the PNG.
pub fn draw(path: &Path, samples: &[Sample]) -> Result<(), BenchError> {
    let rates = rates(samples);
    let with_text = load_font();
    let end = rates.last().map_or(1.0, |r| r.0);
    let top = rates
        .iter()
        .map(|r| r.1.max(r.2).max(r.3))
        .fold(1.0, f64::max)
        * 1.05;
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if with_text {
        builder
            .caption("flowgate bench: messages per second", ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(80);
    }
    let mut chart = builder.build_cartesian_2d(0.0..end, 0.0..top)?;
    let mut mesh = chart.configure_mesh();
    if with_text {
        mesh.x_desc("seconds")
            .y_desc("msgs/s")
            .y_label_formatter(&|v| format!("{:.0}k", v / 1000.0));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;
    let series: [Series; 3] = [
        ("published", BLUE, |r| r.1),
        ("received", GREEN, |r| r.2),
        ("acked", RED, |r| r.3),
    ];
    for (label, color, value) in series {
        let drawn = chart.draw_series(LineSeries::new(
            rates.iter().map(|r| (r.0, value(r))),
            color.stroke_width(2),
        ))?;
        if with_text {
            drawn
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
        }
    }
    if with_text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
