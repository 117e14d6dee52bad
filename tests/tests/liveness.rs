//! Which signal says a worker's event loop turns, on real Node workers
//! blocked in every way a request handler blocks one: CPU, `Atomics.wait`,
//! synchronous file reads and writes, `execSync`. With the kernel's count
//! of epoll waits (`--loop-signal kernel`) each is busy and its queue is
//! rescued; the `/proc` signals are fooled by the reads and writes (read
//! system calls look like progress) and by `execSync` (its private loop
//! sits in epoll). Counted, never timed (`watt_tests::block`).
use watt_tests::{
    agent::{self, Agent},
    block::{BlockResult, Marks, block_one_worker},
};

/// Four workers that block `kind`-wise for 1 s on SIGUSR2. Under the
/// `/proc` signal the table is not weighed by load: a worker whose queue
/// waits would get fewer connections by its weight alone, and the control
/// is about what the liveness signal sees.
fn start(kind: &str, signal: &str, marks: &Marks) -> Agent {
    let weigh = if signal == "proc" {
        "--weigh-in-flight=false"
    } else {
        "--weigh-in-flight=true"
    };
    agent::start_test_app(
        4,
        &["--loop-signal", signal, weigh],
        &[
            ("TEST_APP_USR2_BLOCK_KIND", kind),
            ("TEST_APP_MARK_DIR", &marks.dir()),
        ],
    )
}

fn run(kind: &str, signal: &str) -> (BlockResult, String) {
    let marks = Marks::new(&format!("{kind}-{signal}"));
    let agent = start(kind, signal, &marks);
    let r = block_one_worker(&agent, &marks);
    (r, agent.log_text())
}

/// With the kernel's count: nothing sent during the block waits for it,
/// nothing fails, and the worker is back afterwards.
fn rescued_with_the_kernel_signal(kind: &str) {
    let (r, log) = run(kind, "kernel");
    assert_eq!(r.failed, 0, "{log}");
    assert_eq!(
        r.waited_out, 0,
        "{kind}: requests sent while the worker was blocked must be served by the others"
    );
    assert!(
        r.after > 10,
        "{kind}: the worker must be back after the block"
    );
    assert!(log.contains("worker busy"), "{log}");
}

/// With `/proc`: the blocked worker keeps its share, or part of it (the
/// control that shows the kernel's count is what makes the difference:
/// with it, none waits). Usually 54–78 requests wait; once, in a full test
/// run, `execSync` let only 10 through: `/proc` likely saw its start (the spawn,
/// neither in epoll nor reading) as a busy loop for a while. Once none
/// waited for `fs.writeSync` to a disk file: a write that waits for its
/// page's writeback makes no progress, and `/proc` rightly saw a block;
/// the test app now writes to tmpfs, where writes never wait.
fn missed_with_the_proc_signal(kind: &str) {
    let (r, log) = run(kind, "proc");
    assert!(
        r.waited_out > 0,
        "{kind}: the /proc signals were expected to miss this block: {} waited\n{log}",
        r.waited_out
    );
}

#[test]
fn synchronous_file_reads_are_busy_with_the_kernel_signal() {
    rescued_with_the_kernel_signal("readsync");
}

#[test]
fn synchronous_file_reads_look_alive_to_proc() {
    missed_with_the_proc_signal("readsync");
}

#[test]
fn synchronous_file_writes_are_busy_with_the_kernel_signal() {
    rescued_with_the_kernel_signal("writesync");
}

#[test]
fn synchronous_file_writes_look_alive_to_proc() {
    missed_with_the_proc_signal("writesync");
}

#[test]
fn exec_sync_is_busy_with_the_kernel_signal() {
    // Its private loop's epoll waits are not turns: only the main loop's
    // epoll instance (the one holding the listener) counts.
    rescued_with_the_kernel_signal("exec");
}

#[test]
fn exec_sync_looks_alive_to_proc() {
    missed_with_the_proc_signal("exec");
}

#[test]
fn a_cpu_loop_is_busy_with_the_kernel_signal() {
    rescued_with_the_kernel_signal("burn");
}

#[test]
fn atomics_wait_is_busy_with_the_kernel_signal() {
    rescued_with_the_kernel_signal("block");
}
