//! Prometheus histograms for `/metrics`, lock-free to record into: the
//! log writer records every fsync on its own thread while `/metrics`
//! reads them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// etcd's buckets for its disk latencies (`etcd_disk_wal_fsync_duration_seconds`):
/// 1 ms doubling to 8.192 s, so dashboards built for etcd read ours.
pub const DISK_BUCKETS: [f64; 14] =
    [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192];

/// Counts of observations at or below each bound (the last slot is +Inf,
/// past every bound), and their sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds must rise");
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let slot = self.bounds.partition_point(|&bound| bound < seconds);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The histogram in Prometheus' text format, cumulative as it wants.
    pub fn render(&self, name: &str, help: &str) -> String {
        let mut out = format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut total = 0;
        for (slot, count) in self.counts.iter().enumerate() {
            total += count.load(Ordering::Relaxed);
            let le = self.bounds.get(slot).map_or_else(|| "+Inf".to_owned(), |bound| bound.to_string());
            out.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {total}\n"));
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        out.push_str(&format!("{name}_sum {sum}\n{name}_count {total}\n"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them_and_render_cumulatively() {
        let h = Histogram::new(&DISK_BUCKETS);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1)); // on a bound: counted in it (le)
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let text = h.render("etcd_disk_wal_fsync_duration_seconds", "help");
        assert!(text.contains("# TYPE etcd_disk_wal_fsync_duration_seconds histogram\n"), "{text}");
        assert!(text.contains("_bucket{le=\"0.001\"} 2\n"), "{text}");
        assert!(text.contains("_bucket{le=\"0.002\"} 2\n"), "{text}");
        assert!(text.contains("_bucket{le=\"0.004\"} 3\n"), "{text}");
        assert!(text.contains("_bucket{le=\"8.192\"} 3\n"), "{text}");
        assert!(text.contains("_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("_count 4\n"), "{text}");
        assert!(text.contains("_sum 10.0045\n"), "{text}");
    }
}
