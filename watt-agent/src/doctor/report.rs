//! The report's model: a check's subject, its outcome, and what a policy
//! that loads no program excuses.
use crate::config::Policy;

/// How a check's outcome reads, from fine to fatal (and `Info` beside).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Pass,
    /// Works, with a caveat.
    Warn,
    /// The agent will not run (as configured) until fixed.
    Fail,
    /// Neither good nor bad: for the record.
    Info,
}

/// Which deployments a failing check stops. The property, not the check's
/// name, decides what `--policy kernel` reports as a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every deployment, whatever the policy (the port, Node, `user`).
    Agent,
    /// Only those that load the eBPF program: every policy but `kernel`,
    /// which runs plain `SO_REUSEPORT` without it.
    Program,
}

impl Scope {
    /// Whether a failure in this scope stops the agent under `policy`.
    #[must_use]
    pub fn needed_under(self, policy: Policy) -> bool {
        match self {
            Self::Agent => true,
            Self::Program => policy != Policy::Kernel,
        }
    }
}

/// What a check is about: the name printed in its line, and its scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subject {
    pub name: &'static str,
    pub scope: Scope,
}

impl Subject {
    /// A check every deployment needs to pass.
    #[must_use]
    pub const fn agent(name: &'static str) -> Self {
        Self {
            name,
            scope: Scope::Agent,
        }
    }

    /// A check only the eBPF program needs to pass.
    #[must_use]
    pub const fn program(name: &'static str) -> Self {
        Self {
            name,
            scope: Scope::Program,
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub level: Level,
    pub subject: Subject,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    pub(super) fn pass(subject: Subject, detail: impl Into<String>) -> Self {
        Self::new(Level::Pass, subject, detail.into(), None)
    }

    pub(super) fn info(subject: Subject, detail: impl Into<String>) -> Self {
        Self::new(Level::Info, subject, detail.into(), None)
    }

    pub(super) fn fail(
        subject: Subject,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(Level::Fail, subject, detail.into(), Some(fix.into()))
    }

    pub(super) fn warn(
        subject: Subject,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(Level::Warn, subject, detail.into(), Some(fix.into()))
    }

    fn new(level: Level, subject: Subject, detail: String, fix: Option<String>) -> Self {
        Self {
            level,
            subject,
            detail,
            fix,
        }
    }

    /// Under a policy that does not need this check's scope, a failure is
    /// reported for the record (`INFO`, no fix) instead of failing doctor:
    /// `--policy kernel` runs whatever the BPF checks found.
    pub fn apply_policy(&mut self, policy: Policy) {
        if self.level != Level::Fail || self.subject.scope.needed_under(policy) {
            return;
        }
        self.level = Level::Info;
        self.fix = None;
        self.detail.push_str(" (not needed with --policy kernel)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_not_the_name_decides_what_policy_kernel_excuses() {
        // A program check under a name no list of names would hold...
        let mut program = Check::fail(Subject::program("anything"), "broken", "mend it");
        // ...and a deployment-wide one under the name of a BPF check.
        let mut agent = Check::fail(Subject::agent("CAP_BPF"), "broken", "mend it");
        program.apply_policy(Policy::Kernel);
        agent.apply_policy(Policy::Kernel);
        assert_eq!(program.level, Level::Info);
        assert_eq!(program.fix, None);
        assert_eq!(program.detail, "broken (not needed with --policy kernel)");
        assert_eq!(agent.level, Level::Fail);
        assert_eq!(agent.fix.as_deref(), Some("mend it"));
    }

    #[test]
    fn policies_that_load_the_program_excuse_nothing() {
        for policy in [Policy::Hash, Policy::Rescue] {
            let mut c = Check::fail(Subject::program("steering"), "broken", "mend it");
            c.apply_policy(policy);
            assert_eq!(c.level, Level::Fail, "{policy}");
        }
    }

    #[test]
    fn only_failures_are_excused() {
        let mut c = Check::warn(Subject::program("kernel"), "old", "upgrade");
        let before = c.clone();
        c.apply_policy(Policy::Kernel);
        assert_eq!(c, before);
    }
}
