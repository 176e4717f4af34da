//! The import's progress: a percentage shared between the pipeline (which raises it) and the
//! metrics endpoint (which reports it), like upstream's `import_progress` counter.
//!
//! It only ever rises. An import that first downloads to scratch space and then converts maps
//! the download onto one span of the percentage and the conversion onto the rest ([`Span`]).

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Hundredths of a percent: 10 000 is done.
const FULL: u32 = 10_000;

/// A shared, rising percentage (0.00 to 100.00). Clones share the value.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<AtomicU32>);

impl Progress {
    /// At 0 %.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// The percentage, 0.0 to 100.0, in steps of 0.01.
    pub fn percent(&self) -> f64 {
        f64::from(self.0.load(Ordering::Relaxed)) / 100.0
    }

    /// Raises the value to `percent` (clamped to 0..=100); a lower value is ignored.
    pub fn raise_to(&self, percent: f64) {
        let hundredths = (percent * 100.0).clamp(0.0, f64::from(FULL)) as u32;
        self.0.fetch_max(hundredths, Ordering::Relaxed);
    }

    /// 100 %.
    pub fn complete(&self) {
        self.0.store(FULL, Ordering::Relaxed);
    }

    /// The whole range as one span.
    pub fn whole(&self) -> Span {
        self.span(0.0, 100.0)
    }

    /// The part of the range from `from` to `to` percent.
    pub fn span(&self, from: f64, to: f64) -> Span {
        Span {
            progress: self.clone(),
            from,
            to: Arc::new(AtomicU64::new(to.to_bits())),
        }
    }
}

/// A part of the percentage that one phase of the import fills. Clones share their end, which
/// [`Span::end_at`] may move: a download learns only from the data's first bytes whether a
/// conversion will follow it.
#[derive(Debug, Clone)]
pub struct Span {
    progress: Progress,
    from: f64,
    to: Arc<AtomicU64>,
}

impl Span {
    /// Reports that `fraction` (0.0 to 1.0) of this phase is done.
    pub fn report(&self, fraction: f64) {
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let to = f64::from_bits(self.to.load(Ordering::Relaxed));
        self.progress
            .raise_to(self.from + (to - self.from) * fraction);
    }

    /// Makes this phase (and its clones) end at `to` percent.
    pub fn end_at(&self, to: f64) {
        self.to.store(to.to_bits(), Ordering::Relaxed);
    }
}

/// Counts the bytes read through it against a known total and reports the fraction.
#[derive(Debug)]
pub struct CountingReader<R> {
    inner: R,
    read: u64,
    total: u64,
    span: Span,
}

impl<R> CountingReader<R> {
    /// Reads `inner`, which holds `total` bytes, reporting into `span`.
    pub fn new(inner: R, total: u64, span: Span) -> Self {
        CountingReader {
            inner,
            read: 0,
            total,
            span,
        }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.total > 0 {
            self.span.report(self.read as f64 / self.total as f64);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rises_only_and_clamps() {
        let p = Progress::new();
        p.raise_to(12.345);
        assert_eq!(p.percent(), 12.34);
        p.raise_to(5.0);
        assert_eq!(p.percent(), 12.34);
        p.raise_to(250.0);
        assert_eq!(p.percent(), 100.0);
        let q = Progress::new();
        q.raise_to(f64::NAN);
        assert_eq!(q.percent(), 0.0);
        q.complete();
        assert_eq!(q.percent(), 100.0);
    }

    #[test]
    fn spans_map_fractions_into_their_range() {
        let p = Progress::new();
        let download = p.span(0.0, 50.0);
        let convert = p.span(50.0, 100.0);
        download.report(0.5);
        assert_eq!(p.percent(), 25.0);
        download.report(1.0);
        convert.report(0.5);
        assert_eq!(p.percent(), 75.0);
        convert.report(f64::INFINITY);
        assert_eq!(p.percent(), 75.0);

        let q = Progress::new();
        let whole = q.whole();
        let clone = whole.clone();
        clone.end_at(50.0);
        whole.report(0.5);
        assert_eq!(q.percent(), 25.0);
    }

    #[test]
    fn counting_reader_reports_the_fraction_read() {
        let p = Progress::new();
        let data = vec![7u8; 1000];
        let mut r = CountingReader::new(&data[..], 1000, p.whole());
        let mut buf = [0u8; 250];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(p.percent(), 25.0);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(p.percent(), 100.0);
    }
}
