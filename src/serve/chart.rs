//! Bar charts as SVG drawn on the server: a page shows them without any script, and
//! each bar can link to the gallery view behind it.

use maud::{html, Markup};

/// One bar: its label, its value and where a click on it goes.
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub href: Option<String>,
}

const ROW: f64 = 22.0;
const LABEL: f64 = 190.0;
const WIDTH: f64 = 560.0;

/// Horizontal bars, longest first as given, scaled to the largest value.
pub fn bars(title: &str, bars: &[Bar]) -> Markup {
    let max = bars.iter().map(|b| b.value).fold(0.0_f64, f64::max);
    let height = ROW * bars.len() as f64 + 8.0;
    let span = WIDTH - LABEL - 70.0;
    figure(
        title,
        height,
        html! {
                    @for (i, b) in bars.iter().enumerate() {
                        @let y = 4.0 + ROW * i as f64;
                        @let w = if max > 0.0 { (b.value / max * span).max(1.0) } else { 1.0 };
                        @let bar = html! {
                            text.label x=(LABEL - 6.0) y=(y + ROW * 0.65) text-anchor="end" { (clip(&b.label, 28)) }
                            rect.bar x=(LABEL) y=(y + 3.0) width=(format!("{w:.1}")) height=(ROW - 6.0) {
                                title { (b.label) ": " (number(b.value)) }
                            }
                            text.value x=(LABEL + w + 5.0) y=(y + ROW * 0.65) { (number(b.value)) }
                        };
                        @match &b.href {
                            Some(href) => a href=(href) { (bar) },
                            None => g { (bar) },
                        }
                    }
        },
    )
}

/// Columns side by side (a value per year), with their labels below.
pub fn columns(title: &str, bars: &[Bar]) -> Markup {
    let max = bars.iter().map(|b| b.value).fold(0.0_f64, f64::max);
    let n = bars.len().max(1) as f64;
    let (height, base) = (200.0, 170.0);
    let step = (WIDTH - 20.0) / n;
    figure(
        title,
        height,
        html! {
                    @for (i, b) in bars.iter().enumerate() {
                        @let x = 10.0 + step * i as f64;
                        @let h = if max > 0.0 { (b.value / max * (base - 20.0)).max(1.0) } else { 1.0 };
                        @let col = html! {
                            rect.bar x=(format!("{:.1}", x + step * 0.1)) y=(format!("{:.1}", base - h))
                                width=(format!("{:.1}", step * 0.8)) height=(format!("{h:.1}")) {
                                title { (b.label) ": " (number(b.value)) }
                            }
                            text.value x=(format!("{:.1}", x + step / 2.0)) y=(format!("{:.1}", base - h - 4.0)) text-anchor="middle" { (number(b.value)) }
                            text.label x=(format!("{:.1}", x + step / 2.0)) y=(base + 16.0) text-anchor="middle" { (clip(&b.label, 10)) }
                        };
                        @match &b.href {
                            Some(href) => a href=(href) { (col) },
                            None => g { (col) },
                        }
                    }
        },
    )
}

/// A chart's frame: its caption and an SVG of the page's width.
fn figure(title: &str, height: f64, body: Markup) -> Markup {
    html! {
        figure.chart {
            figcaption { (title) }
            svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label=(title)
                viewBox=(format!("0 0 {WIDTH} {height}")) width=(WIDTH) height=(height) {
                (body)
            }
        }
    }
}

fn clip(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        return text.to_string();
    }
    let mut s: String = text.chars().take(n - 1).collect();
    s.push('…');
    s
}

/// A value as a chart prints it: whole numbers without decimals.
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_and_escape_labels() {
        let svg = bars(
            "t",
            &[
                Bar {
                    label: "<b>".into(),
                    value: 10.0,
                    href: Some("/gallery?tags=a&b".into()),
                },
                Bar {
                    label: "x".into(),
                    value: 5.0,
                    href: None,
                },
            ],
        )
        .into_string();
        assert!(svg.contains("&lt;b&gt;"), "{svg}");
        assert!(svg.contains("href=\"/gallery?tags=a&amp;b\""), "{svg}");
        assert!(svg.contains(&format!("width=\"{:.1}\"", WIDTH - LABEL - 70.0)));
        assert!(svg.contains(&format!("width=\"{:.1}\"", (WIDTH - LABEL - 70.0) / 2.0)));
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.250");
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
