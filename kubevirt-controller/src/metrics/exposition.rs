//! Prometheus' text exposition format 0.0.4, hand-written: a scrape is a handful of families
//! rendered from the cluster's or the node's state at that moment, so no registry is needed.

use std::fmt::Write;

/// The `Content-Type` of a scrape's reply.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A value that only grows (resets when its source restarts).
    Counter,
}

/// One metric family: its name, HELP text, type and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The metric name (`kubevirt_vmi_phase_count`).
    pub name: &'static str,
    /// The HELP text.
    pub help: &'static str,
    /// The TYPE.
    pub kind: Kind,
    /// The samples: label pairs and value.
    pub samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    /// A family without samples.
    pub fn new(name: &'static str, help: &'static str, kind: Kind) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a sample.
    pub fn push(&mut self, labels: &[(&'static str, &str)], value: f64) {
        let labels = labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
        self.samples.push((labels, value));
    }

    /// This family with one sample.
    pub fn with(mut self, labels: &[(&'static str, &str)], value: f64) -> Family {
        self.push(labels, value);
        self
    }
}

/// `\` and newline escaped, as a HELP text must be.
pub fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// `\`, `"` and newline escaped, as a label value must be.
pub fn escape_label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value: Go's float formatting as Prometheus reads it (`NaN`, `+Inf`, `-Inf`).
fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

/// Renders `families` (each HELP, TYPE, then its samples; a family without samples keeps
/// its HELP and TYPE lines).
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let kind = match f.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for (labels, v) in &f.samples {
            out.push_str(f.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", value(*v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        let f = Family::new("m_total", "a \\ back\nslash", Kind::Counter)
            .with(&[("name", "say \"hi\"\\\n"), ("b", "")], 3.0);
        assert_eq!(
            render(&[f]),
            "# HELP m_total a \\\\ back\\nslash\n# TYPE m_total counter\n\
             m_total{name=\"say \\\"hi\\\"\\\\\\n\",b=\"\"} 3\n"
        );
    }

    #[test]
    fn values_are_written_as_prometheus_reads_them() {
        let f = Family::new("g", "h", Kind::Gauge)
            .with(&[], 2.5)
            .with(&[], f64::NAN)
            .with(&[], f64::INFINITY)
            .with(&[], f64::NEG_INFINITY)
            .with(&[], 68_719_476_736.0);
        let text = render(&[f]);
        let values: Vec<&str> = text.lines().skip(2).map(|l| &l[2..]).collect();
        assert_eq!(values, ["2.5", "NaN", "+Inf", "-Inf", "68719476736"]);
    }

    #[test]
    fn an_empty_family_keeps_its_help_and_type() {
        let text = render(&[Family::new("e", "nothing yet", Kind::Gauge)]);
        assert_eq!(text, "# HELP e nothing yet\n# TYPE e gauge\n");
    }
}
