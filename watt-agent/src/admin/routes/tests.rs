//! The API's command rules and answers, against a fake supervisor.
use super::*;

#[test]
fn commands_are_trusted_from_this_host_only() {
    let tcp = |peer: &str, local: &str| Peer::Tcp {
        peer: peer.parse().unwrap(),
        local: local.parse().unwrap(),
    };
    assert!(Peer::Unix.is_local());
    assert!(tcp("127.0.0.1:5000", "127.0.0.1:9090").is_local());
    assert!(tcp("[::1]:5000", "[::1]:9090").is_local());
    assert!(tcp("[::ffff:127.0.0.1]:5000", "[::]:9090").is_local());
    // kubectl exec in the pod, API on the pod's address.
    assert!(tcp("10.1.2.3:5000", "10.1.2.3:9090").is_local());
    assert!(tcp("[::ffff:10.1.2.3]:5000", "10.1.2.3:9090").is_local());
    assert!(!tcp("10.1.2.4:5000", "10.1.2.3:9090").is_local());
    assert!(!tcp("192.0.2.1:5000", "[::]:9090").is_local());
}

/// A lifecycle with `workers` ready workers, answering commands on a
/// channel as the supervisor's driver does.
fn supervisor_with_reload_running(workers: u32) -> mpsc::UnboundedSender<Control> {
    use crate::supervisor::{
        answer,
        backoff::BackoffPolicy,
        lifecycle::{Action, Event, Lifecycle, Settings},
    };
    let mut m = Lifecycle::new(Settings {
        workers,
        max_slots: 8,
        start_timeout: Duration::from_secs(10),
        kill_timeout: Duration::from_secs(5),
        backoff: BackoffPolicy::default(),
        startup_attempts: crate::supervisor::lifecycle::STARTUP_ATTEMPTS,
        keep_listeners: true,
    });
    let now = Instant::now();
    let spawns: Vec<_> = m
        .handle(now, Event::Start)
        .into_iter()
        .filter_map(|a| match a {
            Action::Spawn { slot, .. } => Some(slot),
            _ => None,
        })
        .collect();
    for (pid, slot) in (100..).zip(spawns) {
        m.handle(now, Event::Spawned { slot, pid });
        m.handle(now, Event::Ready { pid });
    }
    m.handle(now, Event::Reload);
    let (tx, mut rx) = mpsc::unbounded_channel::<Control>();
    tokio::spawn(async move {
        while let Some(c) = rx.recv().await {
            let verdict = answer(&m, c.command).map(|(_, message)| message);
            let _ = c.reply.send(verdict);
        }
    });
    tx
}

async fn body(r: Reply) -> (u16, String) {
    use http_body_util::BodyExt as _;
    let status = r.status().as_u16();
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// The API answers from the lifecycle's verdict, not from a snapshot:
/// the published `Shared` (which the API used to judge by) may still
/// say "not reloading" when the lifecycle already is.
#[tokio::test]
async fn a_command_the_lifecycle_refuses_gets_409() {
    let control = supervisor_with_reload_running(2);
    let (status, text) = body(send_command(&control, Command::Reload).await).await;
    assert_eq!(status, 409, "{text}");
    assert!(
        text.contains("a rolling reload is already running"),
        "{text}"
    );
    // Worker 0 is the reload's first: being replaced already.
    let restart = |worker| Command::Restart { worker };
    let (status, text) = body(send_command(&control, restart(0)).await).await;
    assert_eq!(status, 409, "{text}");
    assert!(
        text.contains("worker 0 is already being replaced"),
        "{text}"
    );
    // Worker 1 waits for its turn: a restart of it runs now.
    let (status, text) = body(send_command(&control, restart(1)).await).await;
    assert_eq!(status, 202, "{text}");
    let (status, text) = body(send_command(&control, restart(7)).await).await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("no worker 7: the workers are 0..1"), "{text}");
}

#[tokio::test]
async fn a_command_without_a_supervisor_gets_503() {
    let (control, rx) = mpsc::unbounded_channel::<Control>();
    drop(rx);
    let (status, _) = body(send_command(&control, Command::Reload).await).await;
    assert_eq!(status, 503);
    // One that takes the command and drops it unanswered.
    let (control, mut rx) = mpsc::unbounded_channel::<Control>();
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let (status, text) = body(send_command(&control, Command::Reload).await).await;
    assert_eq!(status, 503, "{text}");
}

#[test]
fn restart_paths_parse() {
    assert_eq!(restart_target("/workers/3/restart"), Some(Ok(3)));
    assert_eq!(restart_target("/workers/x/restart"), Some(Err(())));
    assert_eq!(restart_target("/workers/3"), None);
}
