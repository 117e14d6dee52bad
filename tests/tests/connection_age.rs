//! `--max-connection-age` with real keep-alive clients: a pool that never
//! reconnects by itself (one pooled connection, requests one after another)
//! gets its connection closed at a request boundary once it is older than
//! the age, and never loses a request to it. Each test runs the same client
//! without the setting too, which keeps its one connection throughout: the
//! self-check that what closed the connections was the age.
use std::time::Duration;

use watt_tests::{
    agent::{Agent, start_test_app},
    free_port, node_client,
};

/// Requests per client run, the pause between them, and the time after
/// which no new one starts: with an age of 1s, four ages or more on an idle
/// machine (40 pauses of 100 ms), and still several on a loaded one, where
/// each request takes longer but the run stops at 6 s.
const COUNT: &str = "40";
const INTERVAL_MS: &str = "100";
const BUDGET_MS: &str = "6000";
/// The age under test.
const AGE: &str = "1s";
/// The client's own bounds (40 requests, 6 s, 5 s per request) end it long
/// before this; it is killed if they did not.
const CLIENT_DEADLINE: Duration = Duration::from_mins(1);

/// One request as the client saw it (a line of `sequential.js`).
#[derive(Debug)]
struct Answer {
    ok: bool,
    /// HTTP/1: the response's `Connection` header.
    connection: Option<String>,
    /// The client's port, and the port the server saw the request come from.
    local: Option<u64>,
    remote: Option<u64>,
    /// HTTP/2: which of the client's sessions carried it (1, 2, ...).
    session: Option<u64>,
    line: String,
}

/// Runs `tests/fixtures/clients/sequential.js` in `mode` (`h1`, `h2`)
/// against `port` to its end.
fn run_client(mode: &str, port: u16) -> Vec<Answer> {
    let port = port.to_string();
    node_client::run(
        "sequential.js",
        &[mode, &port, COUNT, INTERVAL_MS, BUDGET_MS],
        CLIENT_DEADLINE,
    )
    .lines()
    .map(parse_answer)
    .collect()
}

fn parse_answer(line: &str) -> Answer {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("client line {line:?}: {e}"));
    Answer {
        ok: v["ok"].as_bool() == Some(true),
        connection: v["connection"].as_str().map(str::to_owned),
        local: v["local"].as_u64(),
        remote: v["remote"].as_u64(),
        session: v["session"].as_u64(),
        line: line.to_owned(),
    }
}

fn lines(answers: &[Answer]) -> String {
    answers
        .iter()
        .map(|a| a.line.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The requests grouped into the connections that carried them, in order:
/// a new group where the server saw a different client port than for the
/// request before (so a port the kernel hands out again later still counts
/// as a new connection).
fn connections(answers: &[Answer]) -> Vec<&[Answer]> {
    answers.chunk_by(|a, b| a.remote == b.remote).collect()
}

/// Keep-alive release is off: on a loaded machine it may close an idle
/// connection of a worker that looks stalled (waiting for a CPU), a close
/// this test would count as the age's without a `Connection: close`.
fn start(workers: usize, age: Option<&str>) -> Agent {
    let mut args = vec!["--keepalive-release=false"];
    if let Some(age) = age {
        args.extend(["--max-connection-age", age]);
    }
    start_test_app(workers, &args, &[])
}

/// HTTP/1 through Node's `http.Agent` with keep-alive and one socket: with
/// the age, every connection but the last ends after a response that said
/// `Connection: close`, and only there; without it one connection carries
/// every request.
#[test]
fn an_http1_connection_older_than_the_age_is_closed_after_a_whole_response() {
    let without = {
        let agent = start(2, None);
        run_client("h1", agent.port)
    };
    let with = {
        let agent = start(2, Some(AGE));
        run_client("h1", agent.port)
    };
    for (arm, answers) in [("without the age", &without), ("with the age", &with)] {
        let text = lines(answers);
        assert!(answers.len() >= 10, "{arm}: too few requests ran:\n{text}");
        let failed = answers.iter().filter(|a| !a.ok).count();
        assert_eq!(failed, 0, "{arm}: {failed} requests failed:\n{text}");
        // Both ends name the same connection: the identity is real.
        assert!(
            answers
                .iter()
                .all(|a| a.local.is_some() && a.local == a.remote),
            "{arm}: the server saw another client port than the client used:\n{text}"
        );
    }

    let control = connections(&without);
    assert_eq!(
        control.len(),
        1,
        "without the age one connection carries every request:\n{}",
        lines(&without)
    );
    let closes = |a: &[Answer]| {
        a.iter()
            .filter(|a| a.connection.as_deref() == Some("close"))
            .count()
    };
    assert_eq!(closes(&without), 0, "{}", lines(&without));

    let text = lines(&with);
    let conns = connections(&with);
    assert!(
        conns.len() >= 2,
        "the age closed no connection in {} requests:\n{text}",
        with.len()
    );
    // Every connection change was announced on a whole response (these are
    // all ok): the last response of each connection but the last said
    // close, and no other response did (the run's very last one may too,
    // with no request after it). A connection the server cut, or closed
    // while a request was on it, would break this count.
    let last_too = usize::from(with.last().and_then(|a| a.connection.as_deref()) == Some("close"));
    assert_eq!(closes(&with), conns.len() - 1 + last_too, "{text}");
    for conn in &conns[..conns.len() - 1] {
        let last = conn.last().expect("a connection has a request");
        assert_eq!(last.connection.as_deref(), Some("close"), "{text}");
    }
}

/// HTTP/2 through one `node:http2` client session at a time: with the age,
/// the server sends GOAWAY when a session reaches it, and the client opens
/// the next one; without it one session carries every request.
#[test]
fn an_http2_session_older_than_the_age_gets_goaway_and_no_request_fails() {
    let run = |age: Option<&str>| {
        let mut args = vec!["--workers", "2"];
        if let Some(age) = age {
            args.extend(["--max-connection-age", age]);
        }
        let agent = Agent::start(
            free_port("127.0.0.1"),
            &args,
            &["node", "tests/fixtures/apps/http2.js"],
        );
        agent.wait_ready(2, Duration::from_secs(30));
        run_client("h2", agent.port)
    };
    let without = run(None);
    let with = run(Some(AGE));
    for (arm, answers) in [("without the age", &without), ("with the age", &with)] {
        let text = lines(answers);
        assert!(answers.len() >= 10, "{arm}: too few requests ran:\n{text}");
        let failed = answers.iter().filter(|a| !a.ok).count();
        assert_eq!(failed, 0, "{arm}: {failed} requests failed:\n{text}");
        assert!(
            answers
                .iter()
                .all(|a| a.local.is_some() && a.local == a.remote),
            "{arm}: the server saw another client port than the client used:\n{text}"
        );
        // Each session of the client is one connection of the server's.
        let sessions = answers.chunk_by(|a, b| a.session == b.session).count();
        assert_eq!(sessions, connections(answers).len(), "{arm}:\n{text}");
    }
    assert_eq!(
        connections(&without).len(),
        1,
        "without the age one session carries every request:\n{}",
        lines(&without)
    );
    let text = lines(&with);
    let conns = connections(&with).len();
    assert!(conns >= 2, "no GOAWAY in {} requests:\n{text}", with.len());
    // A request sent just as a GOAWAY crossed it is refused unprocessed and
    // sent again (at most one per GOAWAY: the client has one request out).
    let retried = with
        .iter()
        .filter(|a| a.line.contains("\"retried\":true"))
        .count();
    assert!(retried < conns, "{retried} retried:\n{text}");
}
