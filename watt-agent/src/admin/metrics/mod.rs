//! `/metrics`: the Prometheus exposition, through `prometheus-client`.
//!
//! Nothing is counted here: every scrape encodes the latest views of the
//! supervisor and the balancer as constant metrics (a [`Collector`]).
//!
//! Labels: `worker` (the stable id `0..N`) and, for what belongs to a
//! listener, `slot`. A worker's slot changes when it is restarted or
//! replaced; both are bounded (at most `2 × workers` slots), so the series
//! stay few. Pids are not labels: they change on every restart.
use std::{fmt, time::Instant};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use super::{
    info::Info,
    status::{self, WorkerState},
};
use crate::{balancer::Snapshot, supervisor::Shared};

/// `Content-Type` of the Prometheus text format 0.0.4.
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// `Content-Type` of the `OpenMetrics` text format.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes the metrics; `OpenMetrics` text if `openmetrics`, else the
/// Prometheus text format.
pub fn encode(
    info: &Info,
    shared: &Shared,
    snap: &Snapshot,
    cache: Option<status::CacheStatus>,
    now: Instant,
    openmetrics: bool,
) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    let mut status = status::build(info, shared, snap, now);
    status.http_cache = cache;
    registry.register_collector(Box::new(Scrape {
        status,
        ticks: snap.ticks,
        tick_seconds: snap.tick_time.as_secs_f64(),
        rescues: snap.rescues,
        rescued_connections: snap.rescued_connections,
        released_connections: snap.released_connections,
        release_races: snap.release_races,
    }));
    let mut out = String::new();
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    }
    Ok(out)
}

/// One scrape's data.
#[derive(Debug)]
struct Scrape {
    status: status::Status,
    ticks: u64,
    tick_seconds: f64,
    rescues: u64,
    rescued_connections: u64,
    released_connections: u64,
    release_races: u64,
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: descriptor, then one sample per label set. Nothing
/// is written when there is no sample.
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: &[(Labels, M)],
) -> fmt::Result {
    let Some(metric_type) = samples.first().map(|(_, m)| m.metric_type()) else {
        return Ok(());
    };
    let mut metric = enc.encode_descriptor(name, help, unit, metric_type)?;
    for (labels, m) in samples {
        m.encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// A metric without labels.
fn single<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    m: &M,
) -> fmt::Result {
    let metric = enc.encode_descriptor(name, help, unit, m.metric_type())?;
    m.encode(metric)
}

fn gauge(v: f64) -> ConstGauge<f64> {
    ConstGauge::new(v)
}

fn int(v: impl Into<u64>) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(v.into()).unwrap_or(i64::MAX))
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn worker_labels(x: &status::WorkerStatus) -> Labels {
    vec![("worker", x.id.to_string())]
}

/// What belongs to the worker's current listener: worker and slot.
fn slot_labels(x: &status::WorkerStatus) -> Option<Labels> {
    Some(vec![
        ("worker", x.id.to_string()),
        ("slot", x.slot?.to_string()),
    ])
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let enc = &mut enc;
        self.fleet(enc)?;
        self.workers(enc)?;
        self.listeners(enc)?;
        self.program(enc)?;
        self.event_loops(enc)?;
        self.http_cache(enc)?;
        self.sampler(enc)
    }
}

impl Scrape {
    /// One sample per worker that has labels (`labels`) and a value.
    fn per<M: EncodeMetric>(
        &self,
        enc: &mut DescriptorEncoder,
        (name, help, unit): (&str, &str, Option<&Unit>),
        labels: fn(&status::WorkerStatus) -> Option<Labels>,
        value: impl Fn(&status::WorkerStatus) -> Option<M>,
    ) -> fmt::Result {
        let samples = self.status.workers.iter();
        let samples = samples.filter_map(|x| Some((labels(x)?, value(x)?)));
        family(enc, name, help, unit, &samples.collect::<Vec<_>>())
    }

    /// One sample per worker that has a value (label `worker`).
    fn per_worker<M: EncodeMetric>(
        &self,
        enc: &mut DescriptorEncoder,
        metric: (&str, &str, Option<&Unit>),
        value: impl Fn(&status::WorkerStatus) -> Option<M>,
    ) -> fmt::Result {
        self.per(enc, metric, |x| Some(worker_labels(x)), value)
    }

    /// One sample per worker that has a listener and a value (labels
    /// `worker`, `slot`).
    fn per_slot<M: EncodeMetric>(
        &self,
        enc: &mut DescriptorEncoder,
        metric: (&str, &str, Option<&Unit>),
        value: impl Fn(&status::WorkerStatus) -> Option<M>,
    ) -> fmt::Result {
        self.per(enc, metric, slot_labels, value)
    }

    /// The agent as a whole: workers, readiness, reloads, uptime.
    fn fleet(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let s = &self.status;
        let ints: [(&str, &str, u64); 6] = [
            (
                "watt_workers",
                "Workers the agent runs (--workers)",
                s.workers_configured as u64,
            ),
            ("watt_workers_ready", "Workers ready now", s.ready as u64),
            (
                "watt_min_ready",
                "Ready workers /readyz needs (--min-ready)",
                u64::from(s.min_ready),
            ),
            (
                "watt_ready",
                "1 when /readyz answers 200",
                u64::from(s.is_ready),
            ),
            (
                "watt_reloading",
                "1 while a rolling reload runs",
                u64::from(s.reloading),
            ),
            (
                "watt_quarantined_requests",
                "Requests every worker answers 503 now because they kept crashing workers",
                s.quarantined.len() as u64,
            ),
        ];
        for (name, help, v) in ints {
            single(enc, name, help, None, &int(v))?;
        }
        single(
            enc,
            "watt_reloads",
            "Rolling reloads finished (every old worker exited)",
            None,
            &counter(s.reloads_finished),
        )?;
        single(
            enc,
            "watt_last_reload_failed",
            "Workers whose replacement did not become ready in the last finished reload (the old one kept serving)",
            None,
            &int(s.last_reload.map_or(0, |r| r.failed as u64)),
        )?;
        single(
            enc,
            "watt_uptime",
            "Time since the agent started",
            Some(&Unit::Seconds),
            &gauge(s.uptime_seconds),
        )
    }

    /// Each worker's state and restarts (label `worker`).
    fn workers(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        family(
            enc,
            "watt_worker_state",
            "1 for the state each worker is in (starting, ready, busy, draining, down), 0 for the others",
            None,
            &self
                .status
                .workers
                .iter()
                .flat_map(|worker| {
                    WorkerState::ALL.iter().map(move |st| {
                        let mut l = worker_labels(worker);
                        l.push(("state", st.name().to_owned()));
                        (l, int(u8::from(worker.state == *st)))
                    })
                })
                .collect::<Vec<_>>(),
        )?;
        self.per_worker(
            enc,
            (
                "watt_worker_restarts",
                "Restarts of each worker after a crash",
                None,
            ),
            |x| Some(counter(u64::from(x.restarts))),
        )?;
        self.per_worker(
            enc,
            (
                "watt_worker_crash_looping",
                "1 while a worker crashes more than --max-restarts times within --restart-window, \
                 or more than --max-restarts times in a row each up less than --min-uptime",
                None,
            ),
            |x| Some(int(u8::from(x.crash_looping))),
        )?;
        self.per_worker(
            enc,
            (
                "watt_worker_uptime",
                "Time since the worker's process started",
                Some(&Unit::Seconds),
            ),
            |x| Some(gauge(x.uptime_seconds?)),
        )
    }

    /// What the balancer measured for each worker's listener (labels
    /// `worker`, `slot`).
    fn listeners(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let seconds = Some(&Unit::Seconds);
        self.per_slot(
            enc,
            (
                "watt_worker_cpu",
                "CPU time of the worker's process",
                seconds,
            ),
            |x| Some(ConstCounter::new(x.load.measured.cpu_time?.as_secs_f64())),
        )?;
        self.per_slot(
            enc,
            (
                "watt_worker_run_queue_wait",
                "Time the worker's main thread waited for a CPU (runnable, not running)",
                seconds,
            ),
            |x| Some(ConstCounter::new(x.load.measured.run_delay?.as_secs_f64())),
        )?;
        self.per_slot(
            enc,
            (
                "watt_worker_resident_memory",
                "Resident memory (RSS) of the worker's process",
                Some(&Unit::Bytes),
            ),
            |x| Some(int(x.load.measured.rss_bytes?)),
        )?;
        self.per_slot(
            enc,
            (
                "watt_worker_accept_queue_depth",
                "Connections waiting in the worker's accept queue at the last sample",
                None,
            ),
            |x| Some(int(x.load.measured.queue_depth?)),
        )?;
        self.per_slot(
            enc,
            (
                "watt_worker_requests_in_flight",
                "Requests the worker is serving as its preload counts them (plus one while a \
                 connection waits in its queue), which weigh the selection table",
                None,
            ),
            |x| Some(int(x.load.measured.in_flight?)),
        )?;
        self.listener_counters(enc)
    }

    /// The per-listener counters: steered, migrated, rescued.
    fn listener_counters(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        type Counter = (
            &'static str,
            &'static str,
            fn(&status::WorkerStatus) -> Option<u64>,
        );
        let counters: [Counter; 5] = [
            (
                "watt_worker_connections",
                "New connections the program steered to the worker's slot (per slot since the agent started)",
                |x| x.load.connections,
            ),
            (
                "watt_worker_migrated_connections",
                "Queued connections migrated into the worker's slot from a stopped listener (per slot since the agent started)",
                |x| x.load.migrated_in,
            ),
            (
                "watt_worker_rescues",
                "Times the worker's accept queue was rescued to other workers",
                |x| Some(x.load.measured.rescues),
            ),
            (
                "watt_worker_rescued_connections",
                "Connections moved out of the worker's accept queue by rescues",
                |x| Some(x.load.measured.rescued_connections),
            ),
            (
                "watt_worker_released_connections",
                "Idle keep-alive connections the agent closed while the worker was busy",
                |x| Some(x.load.measured.released_connections),
            ),
        ];
        for (name, help, value) in counters {
            self.per_slot(enc, (name, help, None), |x| value(x).map(counter))?;
        }
        Ok(())
    }

    /// The steering program: its mode, its decisions, its run time.
    fn program(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let s = &self.status;
        if let Some(source) = s.queue_depth_source {
            family(
                enc,
                "watt_queue_depth_source",
                "Where accept-queue depths come from (1 for the source in use; absent: none)",
                None,
                &[(vec![("source", source.as_str().to_owned())], int(1u32))],
            )?;
        }
        let Some(p) = &s.program else {
            return Ok(());
        };
        family(
            enc,
            "watt_program_mode",
            "Which steering program runs (1 for the mode in use): select-or-migrate, or \
             select-only on kernels before 5.14 (no lossless crash or drain)",
            None,
            &[(vec![("mode", p.mode.as_str().to_owned())], int(1u32))],
        )?;
        let counters = [
            (
                "watt_program_connections",
                "New connections the steering program decided",
                p.connections,
            ),
            (
                "watt_program_migrations",
                "Queued connections the program moved from a stopped listener",
                p.migrations,
            ),
            (
                "watt_program_fallbacks",
                "Connections left to the kernel's hash (no usable table entry)",
                p.fallbacks,
            ),
            (
                "watt_program_no_ready_slot",
                "Connections that arrived while no worker was ready",
                p.no_ready_slot,
            ),
            (
                "watt_program_select_errors",
                "Failed socket selections in the program",
                p.select_errors,
            ),
        ];
        for (name, help, v) in counters {
            single(enc, name, help, None, &counter(v))?;
        }
        if let (Some(t), Some(n)) = (p.run_time_seconds, p.runs) {
            single(
                enc,
                "watt_program_run_time",
                "Time the kernel spent in the program (--bpf-stats)",
                Some(&Unit::Seconds),
                &ConstCounter::new(t),
            )?;
            single(
                enc,
                "watt_program_runs",
                "Runs of the program (--bpf-stats)",
                None,
                &counter(n),
            )?;
        }
        Ok(())
    }

    /// The balancer's own work: ticks and rescues.
    fn sampler(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        single(
            enc,
            "watt_sampler_ticks",
            "Load-sampler ticks run",
            None,
            &counter(self.ticks),
        )?;
        single(
            enc,
            "watt_sampler_tick_duration",
            "Time the load-sampler ticks took in total (divide by watt_sampler_ticks_total for the mean)",
            Some(&Unit::Seconds),
            &ConstCounter::new(self.tick_seconds),
        )?;
        single(
            enc,
            "watt_rescues",
            "Accept-queue rescues, all workers",
            None,
            &counter(self.rescues),
        )?;
        single(
            enc,
            "watt_rescued_connections",
            "Connections moved by accept-queue rescues, all workers",
            None,
            &counter(self.rescued_connections),
        )?;
        single(
            enc,
            "watt_released_connections",
            "Idle keep-alive connections of busy workers closed by the agent, all workers",
            None,
            &counter(self.released_connections),
        )?;
        single(
            enc,
            "watt_release_races",
            "Released connections on which a request arrived as they closed: taken out unread (the app never saw it; the client saw the connection close before a response)",
            None,
            &counter(self.release_races),
        )
    }

    /// The shared HTTP cache's store (nothing when the cache is off).
    fn http_cache(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let Some(c) = &self.status.http_cache else {
            return Ok(());
        };
        for (name, help, value) in [
            (
                "watt_http_cache_hits",
                "Lookups of the shared HTTP cache that found a stored response",
                c.hits,
            ),
            (
                "watt_http_cache_misses",
                "Lookups of the shared HTTP cache that found nothing",
                c.misses,
            ),
            (
                "watt_http_cache_stores",
                "Responses stored in the shared HTTP cache",
                c.stores,
            ),
            (
                "watt_http_cache_evictions",
                "Entries removed from the shared HTTP cache to keep it within its size and count limits",
                c.evictions,
            ),
            (
                "watt_http_cache_invalidations",
                "Entries removed from the shared HTTP cache by an invalidation (tags, keys, or an unsafe request to the same URL)",
                c.invalidations,
            ),
            (
                "watt_http_cache_too_large",
                "Responses not stored because they were larger than max_entry_size",
                c.too_large,
            ),
            (
                "watt_http_cache_store_errors",
                "Calls to the fleet store (Valkey/Redis) that failed or timed out; each was a miss",
                c.store_errors,
            ),
        ] {
            single(enc, name, help, None, &counter(value))?;
        }
        single(
            enc,
            "watt_http_cache_store_up",
            "1 while the shared HTTP cache's store answers, 0 during an outage of the fleet store",
            None,
            &int(u64::from(c.store_up)),
        )?;
        // The local store's own figures (a fleet store's are the server's).
        let local = [
            (
                "watt_http_cache_size",
                "Memory the shared HTTP cache's entries take (local store)",
                Some(&Unit::Bytes),
                c.bytes,
            ),
            (
                "watt_http_cache_max_size",
                "The shared HTTP cache's size limit, max_size (local store)",
                Some(&Unit::Bytes),
                c.max_bytes,
            ),
            (
                "watt_http_cache_entries",
                "Responses in the shared HTTP cache (local store)",
                None,
                c.entries,
            ),
        ];
        for (name, help, unit, value) in local {
            if let Some(v) = value {
                single(enc, name, help, unit, &int(v))?;
            }
        }
        Ok(())
    }
}

mod event_loop;
#[cfg(test)]
mod tests;
