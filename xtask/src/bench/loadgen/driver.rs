//! One run on the current thread's runtime: the open-loop schedule, the
//! hand-off of each request to a connection, the drain, and the report.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::sync::Notify;

use super::{
    connection::{keep_alive_conn, one_shot},
    error::ErrorKind,
    plan::{Class, Connections, Plan, Request, count_f64, request_bytes, target_of},
    report::{ClassReport, Report},
    state::{ClassStats, Ctx, MAX_LATENCY_US, Shared, State, Ticket, histogram},
    timer::Timer,
};

pub(super) async fn drive(plan: Plan) -> anyhow::Result<Report> {
    let start = Instant::now();
    let ctx = context(&plan);
    if let Connections::KeepAlive(n) = plan.connections {
        for _ in 0..n {
            tokio::task::spawn_local(keep_alive_conn(Rc::clone(&ctx)));
        }
    }
    let lag = schedule(&ctx, &plan, start).await?;
    drain(&ctx, &plan, start).await;
    Ok(collect(&ctx, &plan, lag))
}

fn context(plan: &Plan) -> Rc<Ctx> {
    let keep_alive = matches!(plan.connections, Connections::KeepAlive(_));
    let state: State = Rc::new(RefCell::new(Shared::new(plan.timeout, plan.classes.len())));
    Rc::new(Ctx {
        addr: plan.addr,
        requests: plan
            .classes
            .iter()
            .map(|c| request_bytes(c, keep_alive))
            .collect(),
        raw: plan
            .classes
            .iter()
            .map(|c| matches!(c.request, Request::Raw(_)))
            .collect(),
        source: plan.source.clone(),
        want_port: plan.source.is_some() || keep_alive,
        state,
        work: Notify::new(),
        idle: Notify::new(),
    })
}

/// Seconds from the start to the end of the schedule (warm-up included).
fn schedule_end(plan: &Plan) -> f64 {
    plan.warmup.as_secs_f64() + plan.duration.as_secs_f64()
}

/// Hands every request of the schedule on at its time; returns the client's
/// lag over the measured window.
async fn schedule(ctx: &Rc<Ctx>, plan: &Plan, start: Instant) -> anyhow::Result<Histogram<u64>> {
    let timer = Timer::new().context("timerfd")?;
    let mut lag = histogram();
    let warm = plan.warmup.as_secs_f64();
    let end = schedule_end(plan);
    let n = plan.classes.len();
    // Class i starts half an interval late (i > 0), so classes do not all
    // fire at t = 0 together.
    let phase: Vec<f64> = plan
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| if i == 0 { 0.0 } else { 0.5 / c.rate })
        .collect();
    let mut k = vec![0u64; n];
    loop {
        let (class, t) = (0..n)
            .map(|i| (i, phase[i] + count_f64(k[i]) / plan.classes[i].rate))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("at least one class");
        if t >= end {
            break;
        }
        k[class] += 1;
        let at = start + Duration::from_secs_f64(t);
        timer.sleep_until(at).await.context("timerfd wait")?;
        let measured = t >= warm;
        if measured {
            let late = Instant::now().saturating_duration_since(at);
            let late_us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
            let _ = lag.record(late_us.clamp(1, MAX_LATENCY_US));
        }
        dispatch(
            ctx,
            plan,
            Ticket {
                class,
                at,
                measured,
            },
        );
    }
    Ok(lag)
}

fn dispatch(ctx: &Rc<Ctx>, plan: &Plan, t: Ticket) {
    let mut s = ctx.state.borrow_mut();
    if t.measured {
        s.classes[t.class].sent += 1;
    }
    if s.in_flight + s.queue.len() >= plan.max_in_flight {
        s.record(&t, Err(ErrorKind::ClientOverload), None);
        return;
    }
    if matches!(plan.connections, Connections::KeepAlive(_)) && !ctx.raw[t.class] {
        s.queue.push_back(t);
        drop(s);
        ctx.work.notify_one();
        return;
    }
    s.in_flight += 1;
    drop(s);
    tokio::task::spawn_local(one_shot(Rc::clone(ctx), t));
}

/// Closes the queue and waits until nothing is open or queued, or until the
/// last request's timeout has passed.
async fn drain(ctx: &Ctx, plan: &Plan, start: Instant) {
    // Drain: every request has at most `timeout` from its scheduled start.
    ctx.state.borrow_mut().closed = true;
    ctx.work.notify_waiters();
    let deadline = tokio::time::Instant::from_std(
        start + Duration::from_secs_f64(schedule_end(plan)) + plan.timeout,
    ) + Duration::from_millis(200);
    loop {
        let busy = {
            let s = ctx.state.borrow();
            s.in_flight > 0 || !s.queue.is_empty()
        };
        if !busy {
            break;
        }
        let idle = ctx.idle.notified();
        if tokio::time::timeout_at(deadline, idle).await.is_err() {
            break;
        }
    }
}

fn collect(ctx: &Ctx, plan: &Plan, lag: Histogram<u64>) -> Report {
    let mut s = ctx.state.borrow_mut();
    // Still queued or open at the deadline: timed out.
    let left: Vec<Ticket> = s.queue.drain(..).collect();
    for t in &left {
        s.record(t, Err(ErrorKind::Timeout), None);
    }
    let (connects, closed_idle) = (s.connects, s.closed_idle);
    let classes = plan
        .classes
        .iter()
        .zip(s.classes.iter_mut())
        .map(|(c, st)| class_report(c, st))
        .collect();
    Report {
        classes,
        measured: plan.duration,
        lag,
        connects,
        closed_idle,
        cpu: Duration::ZERO,
        wall: Duration::ZERO,
    }
}

/// A class's counts as reported; requests sent and neither answered nor
/// failed (still open at the deadline) count as timed out.
fn class_report(c: &Class, st: &mut ClassStats) -> ClassReport {
    let mut errors: BTreeMap<String, u64> = st.errors.iter().map(|(k, v)| (k.key(), *v)).collect();
    let done = st.ok + st.errors.values().sum::<u64>();
    if st.sent > done {
        *errors.entry(ErrorKind::Timeout.key()).or_default() += st.sent - done;
    }
    ClassReport {
        name: c.name.clone(),
        target: target_of(c),
        rate: c.rate,
        sent: st.sent,
        ok: st.ok,
        errors,
        latency: st.latency.clone(),
        failures: std::mem::take(&mut st.failures),
    }
}
