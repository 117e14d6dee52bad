//! How the report prints: one line per check (and its fix on the next),
//! then a summary. Tests and the kernel matrix parse these lines: keep
//! them byte for byte.
use std::fmt;

use super::report::{Check, Level};
use crate::exit;

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "PASS",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
            Self::Info => "INFO",
        })
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}  {:<15} {}",
            self.level, self.subject.name, self.detail
        )?;
        if let Some(fix) = &self.fix {
            write!(f, "\n      fix: {fix}")?;
        }
        Ok(())
    }
}

/// The closing line and the exit code: 0 when nothing fails, else 3
/// (`exit::ENVIRONMENT`).
#[must_use]
pub fn summary(report: &[Check]) -> (String, i32) {
    let failed = report.iter().filter(|c| c.level == Level::Fail).count();
    if failed == 0 {
        (
            "all checks passed: watt-agent can run here".to_owned(),
            exit::OK,
        )
    } else {
        (
            format!("{failed} check(s) failed: see the fixes above"),
            exit::ENVIRONMENT,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Subject;

    #[test]
    fn a_failed_check_prints_its_fix_on_the_next_line() {
        let c = Check::fail(Subject::program("CAP_BPF"), "missing", "grant it");
        assert_eq!(
            c.to_string(),
            "FAIL  CAP_BPF         missing\n      fix: grant it"
        );
        assert_eq!(
            Check::pass(Subject::agent("x"), "ok").to_string(),
            "PASS  x               ok"
        );
    }

    #[test]
    fn the_summary_counts_failures_and_sets_the_exit_code() {
        let pass = Check::pass(Subject::agent("port"), "free");
        let warn = Check::warn(Subject::agent("node"), "odd", "look");
        assert_eq!(
            summary(&[pass.clone(), warn]),
            (
                "all checks passed: watt-agent can run here".to_owned(),
                exit::OK
            )
        );
        let fail = Check::fail(Subject::agent("port"), "taken", "free it");
        assert_eq!(
            summary(&[pass, fail.clone(), fail]),
            (
                "2 check(s) failed: see the fixes above".to_owned(),
                exit::ENVIRONMENT
            )
        );
    }
}
