//! Draws the chart in `BENCHMARKS.md` (issue 6) as a PNG from the benchmarks' own output:
//!
//! * `bench/target/bench-results/inprocess.json`, written by `cargo bench --manifest-path bench/Cargo.toml --bench layer`;
//! * `bench/target/bench-results/http_load.json`, written by `bench/http_load.sh`;
//! * `bench/target/bench-results/memory.json`, written by `bench/memory.sh`.
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml --bin bench_chart [RESULTS_DIR] [OUT.png]
//! ```
//!
//! Defaults: `bench/target/bench-results` (or `$CARGO_TARGET_DIR/bench-results`) and
//! `bench/benchmarks.png`. Text is drawn with a TrueType font read at run time: `$CHART_FONT`
//! or DejaVu Sans from Debian's `fonts-dejavu-core` package. A panel whose input is missing
//! says so instead of showing numbers.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde_json::Value;

const GUARD: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const GUARD_LIGHT: RGBColor = RGBColor(0x8c, 0xbc, 0xe0);
const PEER: RGBColor = RGBColor(0xd6, 0x61, 0x1c);
const PEER_LIGHT: RGBColor = RGBColor(0xf0, 0xb2, 0x8a);
const TARGET_LINE: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// One horizontal bar: label, value, colour, optional whisker (min, max).
struct Bar {
    label: String,
    value: f64,
    color: RGBColor,
    range: Option<(f64, f64)>,
}

fn bar(label: &str, value: f64, color: RGBColor) -> Bar {
    Bar {
        label: label.to_owned(),
        value,
        color,
        range: None,
    }
}

fn load_font() -> Res<()> {
    let candidates = [
        std::env::var("CHART_FONT").unwrap_or_default(),
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".to_owned(),
        "/usr/share/fonts/TTF/DejaVuSans.ttf".to_owned(),
        "/usr/share/fonts/dejavu/DejaVuSans.ttf".to_owned(),
    ];
    let path = candidates
        .iter()
        .find(|p| !p.is_empty() && Path::new(p).exists())
        .ok_or("no TrueType font: set CHART_FONT or apt-get install fonts-dejavu-core")?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{path} is not a usable font"))?;
    Ok(())
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// A panel of horizontal bars, with an optional vertical target line.
fn hbars(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    bars: &[Bar],
    target: Option<(f64, &str)>,
    unit: &str,
    decimals: usize,
) -> Res<()> {
    if bars.is_empty() {
        area.draw(&Text::new(
            format!("{title}: no data (run its benchmark first)"),
            (20, 40),
            ("sans-serif", 18),
        ))?;
        return Ok(());
    }
    let top = bars
        .iter()
        .map(|b| b.range.map_or(b.value, |r| r.1).max(b.value))
        .chain(target.map(|t| t.0))
        .fold(0.0f64, f64::max)
        * 1.25;
    let n = bars.len();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 19))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(205)
        .build_cartesian_2d(0f64..top, (0..n - 1).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) if *i < n => bars[n - 1 - *i].label.clone(),
            _ => String::new(),
        })
        .x_labels(6)
        .x_label_formatter(&|x| {
            if top > 10.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.1}")
            }
        })
        .x_desc(unit)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    for (row, b) in bars.iter().enumerate() {
        let y = n - 1 - row;
        let mut rect = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(y)),
                (b.value, SegmentValue::Exact(y + 1)),
            ],
            b.color.filled(),
        );
        rect.set_margin(5, 5, 0, 0);
        chart.draw_series(std::iter::once(rect))?;
        if let Some((lo, hi)) = b.range {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![
                    (lo, SegmentValue::CenterOf(y)),
                    (hi, SegmentValue::CenterOf(y)),
                ],
                BLACK.stroke_width(2),
            )))?;
        }
        let end = b.range.map_or(b.value, |r| r.1.max(b.value));
        chart.draw_series(std::iter::once(Text::new(
            format!(" {:.*}", decimals, b.value),
            (end, SegmentValue::CenterOf(y)),
            ("sans-serif", 14).into_font().color(&BLACK),
        )))?;
    }
    if let Some((x, label)) = target {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x, SegmentValue::Exact(0)), (x, SegmentValue::Last)],
            TARGET_LINE.stroke_width(2),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!(" {label}"),
            (x, SegmentValue::Last),
            ("sans-serif", 13).into_font().color(&TARGET_LINE),
        )))?;
    }
    Ok(())
}

fn inprocess_bars(doc: Option<Value>) -> Vec<Bar> {
    let Some(doc) = doc else { return Vec::new() };
    let m = |k: &str| doc["medians"][k].as_f64();
    let Some(bare) = m("bare_router") else {
        return Vec::new();
    };
    let rows = [
        ("layer, no cookie", "guard_no_cookie", GUARD_LIGHT),
        ("layer, 1 session", "guard_auth", GUARD),
        ("layer, 1k sessions", "guard_auth_1k", GUARD),
        ("layer, 1M (10k active)", "guard_1m_active10k", GUARD),
        ("layer, 1M uniform", "guard_1m_uniform", GUARD),
        ("tower-sessions, 1 session", "tower_sessions_auth", PEER),
        (
            "tower-sessions, always_save",
            "tower_sessions_auth_always_save",
            PEER_LIGHT,
        ),
        (
            "tower-sessions, 1M (10k act.)",
            "tower_sessions_1m_active10k",
            PEER,
        ),
        (
            "tower-sessions, 1M uniform",
            "tower_sessions_1m_uniform",
            PEER,
        ),
    ];
    rows.iter()
        .filter_map(|(label, key, color)| Some(bar(label, (m(key)? - bare).max(0.0), *color)))
        .collect()
}

fn http_bars(doc: Option<Value>) -> Vec<Bar> {
    let Some(doc) = doc else { return Vec::new() };
    let mut out = Vec::new();
    for (server, name, colors) in [
        ("guard", "layer", (GUARD, GUARD_LIGHT)),
        ("tower-sessions", "tower-sessions", (PEER, PEER_LIGHT)),
    ] {
        for (setup, color) in [("pinned", colors.0), ("unpinned", colors.1)] {
            let s = &doc["setups"][setup][server];
            let (Some(ratio), Some(lo), Some(hi)) = (
                s["ratio_to_bare"].as_f64(),
                s["round_ratio_min"].as_f64(),
                s["round_ratio_max"].as_f64(),
            ) else {
                continue;
            };
            out.push(Bar {
                label: format!("{name}, {setup}"),
                value: ratio,
                color,
                range: Some((lo, hi)),
            });
        }
    }
    out
}

fn memory_bars(doc: Option<Value>) -> (Vec<Bar>, String) {
    let Some(Value::Array(runs)) = doc else {
        return (Vec::new(), String::new());
    };
    let mut out = Vec::new();
    let mut sessions = String::new();
    for run in &runs {
        let (name, colors) = match run["mode"].as_str() {
            Some("guard") => ("layer", (GUARD, GUARD_LIGHT)),
            Some("tower-sessions") => ("tower-sessions", (PEER, PEER_LIGHT)),
            Some("tower-sessions-min") => ("tower-sessions, id only", (PEER_LIGHT, PEER_LIGHT)),
            _ => continue,
        };
        if let Some(n) = run["sessions"].as_u64() {
            sessions = match n {
                n if n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
                n if n % 1_000 == 0 => format!("{}k", n / 1_000),
                n => n.to_string(),
            };
        }
        if let Some(v) = run["bytes_per_session_peak"].as_f64() {
            out.push(bar(&format!("{name}, peak"), v, colors.0));
        }
        if let Some(v) = run["bytes_per_session_resident"].as_f64() {
            out.push(bar(&format!("{name}, resident"), v, colors.1));
        }
    }
    (out, sessions)
}

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let results = args.next().map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
            .join("bench-results")
    });
    let out = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benchmarks.png"));
    load_font()?;

    let root = BitMapBackend::new(&out, (1800, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(40);
    head.draw(&Text::new(
        "tower-session-guard vs a bare axum router and tower-sessions (issue 6; numbers and commands in BENCHMARKS.md)",
        (14, 10),
        ("sans-serif", 20),
    ))?;
    let panels = body.split_evenly((1, 3));

    hbars(
        &panels[0],
        "In process: overhead over a bare router",
        &inprocess_bars(read_json(&results.join("inprocess.json"))),
        None,
        "ns per request over bare_router (criterion median)",
        0,
    )?;
    hbars(
        &panels[1],
        "HTTP (wrk, loopback): throughput / bare",
        &http_bars(read_json(&results.join("http_load.json"))),
        Some((0.9, "0.90 target (pinned)")),
        "ratio of median requests/s to bare (whisker: per-round min..max)",
        3,
    )?;
    let (mem, sessions) = memory_bars(read_json(&results.join("memory.json")));
    hbars(
        &panels[2],
        &format!("Memory at {sessions} live sessions"),
        &mem,
        Some((256.0, "256 B target")),
        "bytes per live session (VmHWM / VmRSS growth)",
        0,
    )?;
    root.present()?;
    println!("wrote {}", out.display());
    Ok(())
}
