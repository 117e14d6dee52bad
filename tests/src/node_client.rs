//! Running a Node client script of `tests/fixtures/clients/` to its end and
//! taking what it printed.
use std::{
    io::Read as _,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// Runs `node tests/fixtures/clients/<script> <args>` and returns its
/// stdout. The script's own bounds end it; it is killed (by its pid) and
/// the test fails if it still runs after `deadline`, or exits non-zero.
#[must_use]
pub fn run(script: &str, args: &[&str], deadline: Duration) -> String {
    let path = crate::root().join("tests/fixtures/clients").join(script);
    let mut child = Command::new("node")
        .arg(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start node {}: {e}", path.display()));
    let mut stdout = child.stdout.take().expect("piped");
    let reader = thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let until = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the client") {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{script} ran past {deadline:?}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().expect("client output");
    assert!(status.success(), "{script} exited with {status}:\n{out}");
    out
}
