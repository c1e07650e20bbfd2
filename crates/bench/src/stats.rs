//! Latency samples (milliseconds) and percentiles.

#[derive(Debug, Clone, Default)]
pub struct Lat {
    sorted: Vec<f64>,
}

impl Lat {
    pub fn new(mut v: Vec<f64>) -> Self {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        Lat { sorted: v }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Nearest-rank percentile; 0 when empty.
    pub fn p(&self, q: f64) -> f64 {
        if self.sorted.is_empty() {
            return 0.0;
        }
        let rank = ((q / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }
}

pub fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
