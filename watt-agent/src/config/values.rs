//! Value types of settings that are more than a number, with their parsers
//! (shared by the command line, the environment and the config file).
use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

/// `--workers`: a count, or `auto` = the CPUs this process may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workers {
    Auto,
    Count(u32),
}

impl FromStr for Workers {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") || s.eq_ignore_ascii_case("max") {
            return Ok(Self::Auto);
        }
        s.parse::<u32>()
            .map(Self::Count)
            .map_err(|_| format!("expected a number of workers or \"auto\", got {s:?}"))
    }
}

/// How connections are steered (`--policy`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// No program: plain `SO_REUSEPORT`, the kernel's hash over all listeners.
    Kernel,
    /// The kernel's hash restricted to ready workers; lossless crash and
    /// drain; no load awareness.
    Hash,
    /// `hash`, plus busy workers (accept queue not draining) taken out of
    /// the table and their queued connections rescued to the others.
    Rescue,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kernel => "kernel",
            Self::Hash => "hash",
            Self::Rescue => "rescue",
        })
    }
}

/// Which signal tells the health model that a worker's event loop turns
/// (`--loop-signal`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum LoopSignal {
    /// `kernel` where it loads (`CAP_PERFMON`, BTF), else `proc`, with a
    /// warning saying why.
    Auto,
    /// Count each worker's entries into its event loop's wait in the
    /// kernel (fentry on `do_epoll_wait`); refuse to start without it.
    Kernel,
    /// Read `/proc`: the main thread idle in epoll, or making read/write
    /// system calls (fooled by synchronous file I/O).
    Proc,
}

impl fmt::Display for LoopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Kernel => "kernel",
            Self::Proc => "proc",
        })
    }
}

/// Where the admin API listens (`--admin`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminAddr {
    Tcp(SocketAddr),
    /// `unix:/path/to/socket`
    Unix(PathBuf),
    Off,
}

impl FromStr for AdminAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path, e.g. unix:/run/watt-agent.sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(Self::Tcp)
            .map_err(|_| format!("expected host:port, unix:/path or off, got {s:?}"))
    }
}

impl fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Off => f.write_str("off"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A memory size such as `512M`, `1.5GiB` or `300000000` (bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemorySize(pub u64);

impl FromStr for MemorySize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.starts_with('-') {
            return Err(format!("a memory size cannot be negative: {s:?}"));
        }
        // PM2 writes `max_memory_restart: 300M`: a bare K/M/G is binary there.
        let normalized = match t.chars().last() {
            Some(c @ ('K' | 'M' | 'G' | 'T' | 'k' | 'm' | 'g' | 't')) => {
                format!("{}{}iB", &t[..t.len() - 1], c.to_ascii_uppercase())
            }
            _ => t.to_owned(),
        };
        normalized
            .parse::<bytesize::ByteSize>()
            .map(|b| Self(b.as_u64()))
            .map_err(|_| format!("expected a memory size like 512M or 1GiB, got {s:?}"))
    }
}

/// Parses a duration such as `10s`, `500ms`, `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("a duration cannot be negative: {s:?}"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("expected a duration like 500ms or 10s, got {s:?} ({e})"))
}

/// `--env KEY=VALUE`.
pub(super) fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_parse() {
        assert_eq!("auto".parse::<Workers>(), Ok(Workers::Auto));
        assert_eq!("4".parse::<Workers>(), Ok(Workers::Count(4)));
        assert!("-1".parse::<Workers>().is_err());
        assert!("four".parse::<Workers>().is_err());
    }

    #[test]
    fn admin_addresses_parse() {
        assert_eq!("off".parse::<AdminAddr>(), Ok(AdminAddr::Off));
        assert_eq!(
            "unix:/run/w.sock".parse::<AdminAddr>(),
            Ok(AdminAddr::Unix("/run/w.sock".into()))
        );
        assert_eq!(AdminAddr::default().to_string(), "127.0.0.1:9090");
        assert!("unix:".parse::<AdminAddr>().is_err());
        assert!("9090".parse::<AdminAddr>().is_err());
    }

    #[test]
    fn memory_sizes_parse_like_pm2() {
        assert_eq!(
            "300M".parse::<MemorySize>(),
            Ok(MemorySize(300 * 1024 * 1024))
        );
        assert_eq!("1GiB".parse::<MemorySize>(), Ok(MemorySize(1 << 30)));
        assert_eq!("1000".parse::<MemorySize>(), Ok(MemorySize(1000)));
        assert!("-5M".parse::<MemorySize>().is_err());
        assert!("lots".parse::<MemorySize>().is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("-1s").unwrap_err().contains("negative"));
        assert!(parse_duration("soon").is_err());
    }
}
