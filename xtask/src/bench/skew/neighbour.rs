//! `--neighbour`: a CPU-heavy process on the same box as the agent and its
//! workers, pinned to one core, as a busy tenant of a shared node would be.
//! It is a plain busy loop (`node -e 'for(;;){}'`), started in a process
//! group of its own through [`Group`], so it is killed by pid at the end of
//! each run, on an error (drop) and on Ctrl-C (the bench's signal thread).
use std::{fs, path::Path, process::Command, time::Duration};

use anyhow::{Context as _, bail};
use nix::{sched::CpuSet, unistd::Pid};
use serde::Serialize;

use crate::bench::peers::procs::Group;

/// Which runs have a neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// None (the default).
    Off,
    /// Every run.
    On,
    /// Every run twice, without and then with one, so the two arms are
    /// compared on the same box minutes apart, not days.
    Both,
}

impl Mode {
    /// Without and/or with a neighbour, in the order the runs go.
    pub fn arms(self) -> &'static [bool] {
        match self {
            Self::Off => &[false],
            Self::On => &[true],
            Self::Both => &[false, true],
        }
    }
}

/// What a run's neighbour did, for the report.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Use {
    /// The core it was pinned to.
    pub core: usize,
    /// Its CPU over the measured window, % of one core (about 100 when it
    /// had its core to itself; less when it shared it).
    pub cpu_percent: f64,
}

/// A running neighbour.
pub struct Neighbour {
    group: Group,
    core: usize,
}

/// The last CPU this process may run on: the default core.
pub fn last_cpu() -> anyhow::Result<usize> {
    let set = nix::sched::sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
    (0..CpuSet::count())
        .rev()
        .find(|&c| set.is_set(c).unwrap_or(false))
        .context("this process may run on no CPU")
}

impl Neighbour {
    /// Starts the busy loop pinned to `core` (its output in `log`) and
    /// checks the kernel holds it there.
    pub fn start(core: usize, log: &Path) -> anyhow::Result<Self> {
        let mut set = CpuSet::new();
        set.set(core)
            .with_context(|| format!("CPU {core} is out of range"))?;
        let mut cmd = Command::new("node");
        cmd.args(["-e", "for (;;) {}"]);
        // Pinned before exec, so every thread node starts inherits the mask.
        // SAFETY: sched_setaffinity is a plain system call; nothing is
        // allocated between fork and exec (the set was built before).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                nix::sched::sched_setaffinity(Pid::from_raw(0), &set).map_err(Into::into)
            });
        }
        let _ = fs::remove_file(log);
        let group = Group::spawn("neighbour", &mut cmd, log)?;
        let pid = group.pid();
        let allowed = fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                    .map(|v| v.trim().to_owned())
            })
            .context("the neighbour's /proc status")?;
        if allowed != core.to_string() {
            bail!("the neighbour (pid {pid}) may run on CPUs {allowed}, not only {core}");
        }
        Ok(Self { group, core })
    }

    pub fn pid(&self) -> i32 {
        self.group.pid()
    }

    /// Stops it; `cpu` is its CPU time over a window of `window`.
    pub fn stop(mut self, cpu: Option<Duration>, window: Duration) -> anyhow::Result<Use> {
        let alive = self.group.exited().is_none();
        self.group.stop(Duration::from_secs(2));
        let cpu = cpu.context("the neighbour's CPU time could not be read")?;
        if !alive {
            bail!("the neighbour exited during the run");
        }
        Ok(Use {
            core: self.core,
            cpu_percent: 100.0 * cpu.as_secs_f64() / window.as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::peers::procs::Proc;

    /// The neighbour is pinned, burns its core, and is gone once stopped.
    #[test]
    fn pinned_busy_and_stopped() {
        let core = last_cpu().unwrap();
        let log = std::env::temp_dir().join(format!("neighbour-test-{}.log", std::process::id()));
        let n = Neighbour::start(core, &log).unwrap();
        let pid = n.pid();
        let p = Proc::of(pid).unwrap();
        let a = super::super::cpu_time(pid).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let b = super::super::cpu_time(pid).unwrap();
        let used = n
            .stop(Some(b.saturating_sub(a)), Duration::from_millis(500))
            .unwrap();
        assert_eq!(used.core, core);
        // Busy (an idle node would use next to nothing after start-up; how
        // much it gets depends on what else runs on its core).
        assert!(used.cpu_percent > 0.0, "{used:?}");
        assert!(!p.alive());
        let _ = fs::remove_file(log);
    }

    #[test]
    fn arms() {
        assert_eq!(Mode::Off.arms(), [false]);
        assert_eq!(Mode::On.arms(), [true]);
        assert_eq!(Mode::Both.arms(), [false, true]);
    }
}
