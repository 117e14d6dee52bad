//! The names every floor shares: a worker, the slot of the reuseport group
//! an instance of it listens on, and a process. The supervisor hands them
//! out; the balancer, the admin API and the metrics only carry them.

/// A slot of the reuseport group: an index into the kernel program's maps.
pub type Slot = u32;
/// A stable worker id `0..N`; its processes come and go.
pub type WorkerId = u32;
/// A process id, as the kernel and `waitpid` give it.
pub type Pid = i32;
