//! The SVG chart: one line per HTTP scenario, its p50, p90, p99 and p99.9 as marks on a shared
//! logarithmic millisecond axis, so proxies at the same load read side by side.

use std::fmt::Write as _;

use crate::report::Row;

const LABEL_W: f64 = 330.0;
const PLOT_W: f64 = 560.0;
const ROW_H: f64 = 20.0;
const TOP: f64 = 72.0;
const MARKS: [(&str, &str); 4] =
    [("p50", "#1f77b4"), ("p90", "#2ca02c"), ("p99", "#ff7f0e"), ("p99.9", "#d62728")];

pub fn svg(rows: &[Row]) -> String {
    let rows: Vec<(&Row, [f64; 4])> =
        rows.iter().filter_map(|r| Some((r, [r.p50_ms?, r.p90_ms?, r.p99_ms?, r.p999_ms?]))).collect();
    let all = rows.iter().flat_map(|(_, p)| p.iter().copied());
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if rows.is_empty() { (0.01, 1.0) } else { (lo.max(0.001), hi.max(lo * 10.0)) };
    let (first, last) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let x = |ms: f64| {
        LABEL_W + (ms.max(10f64.powi(first)).log10() - first as f64) / (last - first) as f64 * PLOT_W
    };
    let height = TOP + ROW_H * rows.len() as f64 + 30.0;
    let width = LABEL_W + PLOT_W + 30.0;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="10" y="18" font-size="14">Latency percentiles per scenario (ms, log scale)</text>"#
    );
    for (i, (name, color)) in MARKS.iter().enumerate() {
        let lx = 14.0 + i as f64 * 80.0;
        let _ = writeln!(
            out,
            r#"<circle cx="{lx}" cy="36" r="4" fill="{color}"/><text x="{}" y="40">{name}</text>"#,
            lx + 8.0
        );
    }
    let bottom = TOP + ROW_H * rows.len() as f64;
    for decade in first..=last {
        let gx = x(10f64.powi(decade));
        let label = format!("{}", 10f64.powi(decade));
        let _ = writeln!(
            out,
            r##"<line x1="{gx:.1}" y1="{}" x2="{gx:.1}" y2="{bottom}" stroke="#ddd"/><text x="{gx:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            TOP - 12.0,
            bottom + 16.0
        );
    }
    for (i, (row, p)) in rows.iter().enumerate() {
        let y = TOP + ROW_H * i as f64 + ROW_H / 2.0;
        let label = match row.rate_rps {
            Some(rate) => format!("{} @ {rate:.0}/s", row.name),
            None => row.name.clone(),
        };
        let _ = writeln!(out, r#"<text x="10" y="{:.1}">{label}</text>"#, y + 4.0);
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#999" stroke-width="2"/>"##,
            x(p[0]),
            x(p[3])
        );
        for (v, (name, color)) in p.iter().zip(MARKS) {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{y:.1}" r="4" fill="{color}"><title>{} {name} {v:.3} ms</title></circle>"#,
                x(*v),
                row.name
            );
        }
    }
    out.push_str("</svg>\n");
    out
}
