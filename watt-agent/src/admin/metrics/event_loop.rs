//! The workers' event loops as the kernel counts them: the stall histogram
//! (`watt_worker_event_loop_stall_seconds`), the longest recent stall, the
//! turns, and which signal the health model uses.
//!
//! The kernel keeps the histogram's buckets itself (one count per stall,
//! `watt_common::STALL_BOUNDS_NS`), so it is encoded from those counts, not
//! observed here.
use std::fmt;

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::MetricType,
};
use watt_common::STALL_BOUNDS_NS;

use super::{Scrape, counter, family, gauge, int};
use crate::balancer::EventLoopLoad;

/// A histogram whose bucket counts were kept elsewhere.
#[derive(Debug)]
struct StallHistogram {
    sum: f64,
    count: u64,
    /// (upper bound in seconds, count in that bucket alone).
    buckets: Vec<(f64, u64)>,
}

impl StallHistogram {
    fn of(l: &EventLoopLoad) -> Self {
        #[expect(
            clippy::cast_precision_loss,
            reason = "bucket bounds are whole milliseconds up to 5 s: exact in an f64"
        )]
        let bounds = STALL_BOUNDS_NS
            .iter()
            .map(|&ns| ns as f64 / 1e9)
            .chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(l.stall_buckets.iter().copied()).collect();
        Self {
            sum: l.stall_total.unwrap_or_default().as_secs_f64(),
            count: buckets.iter().map(|(_, c)| c).sum(),
            buckets,
        }
    }
}

impl EncodeMetric for StallHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Scrape {
    pub(super) fn event_loops(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        if let Some(signal) = self.status.loop_signal {
            let hook = self.status.loop_hook.map_or("", |h| h.as_str());
            family(
                enc,
                "watt_loop_signal",
                "What tells the health model a worker's event loop turns (1 for the one in use): \
                 kernel (its epoll waits counted, hook fentry or tracepoint) or proc",
                None,
                &[(
                    vec![("signal", signal.to_string()), ("hook", hook.to_owned())],
                    int(1u32),
                )],
            )?;
        }
        let event_loop =
            |x: &crate::admin::status::WorkerStatus| x.load.measured.event_loop.clone();
        self.per_slot(
            enc,
            (
                "watt_worker_event_loop_stall_seconds",
                "Stretches the worker's event loop spent outside its wait (one turn's work), \
                 measured by the kernel from its epoll waits",
                None,
            ),
            |x| event_loop(x).map(|l| StallHistogram::of(&l)),
        )?;
        self.per_slot(
            enc,
            (
                "watt_worker_event_loop_longest_recent_stall_seconds",
                "The longest stall of the last 30 to 60 s, the one going on included",
                None,
            ),
            |x| {
                event_loop(x)
                    .and_then(|l| l.longest_recent_stall)
                    .map(|d| gauge(d.as_secs_f64()))
            },
        )?;
        self.per_slot(
            enc,
            (
                "watt_worker_event_loop_turns",
                "Entries of the worker's event loop into its wait",
                None,
            ),
            |x| event_loop(x).map(|l| counter(l.turns)),
        )
    }
}
