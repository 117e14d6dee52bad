//! Reading one guest's results folder into a verdict, and the table.
use std::{fs, path::Path, time::Duration};

/// One step's outcome.
#[derive(Debug)]
pub struct Step {
    pub name: String,
    /// Exit code, `None` when the guest never finished the step.
    pub rc: Option<i32>,
    /// `passed/total` where the step reports counts (tests, e2e).
    pub counts: Option<(u32, u32)>,
    /// Tests that said they were skipped, and why (first line).
    pub skipped: Vec<String>,
}

impl Step {
    fn ok(&self) -> bool {
        self.rc == Some(0) && self.counts.is_none_or(|(p, t)| p == t && t > 0)
    }

    fn cell(&self) -> String {
        let verdict = match (self.rc, self.counts) {
            (None, _) => "not run".to_owned(),
            (Some(_), Some((p, t))) => format!("{p}/{t}"),
            (Some(0), None) => "ok".to_owned(),
            (Some(rc), None) => format!("exit {rc}"),
        };
        let skipped = if self.skipped.is_empty() {
            String::new()
        } else {
            format!(" ({} skipped)", self.skipped.len())
        };
        let mark = if self.ok() { "" } else { " FAILED" };
        format!("{}: {verdict}{skipped}{mark}", self.name)
    }
}

/// One kernel.
#[derive(Debug)]
pub struct Row {
    pub line: String,
    pub release: String,
    pub steps: Vec<Step>,
    pub powered_off: bool,
    pub elapsed: Duration,
    /// The program mode `doctor` reported.
    pub mode: Option<String>,
    /// Boots whose kernel panicked before the init script ran, each
    /// followed by another boot (see `guest::boot_retrying_early_panics`).
    pub panicked_boots: u32,
}

impl Row {
    pub fn read(
        line: &str,
        release: &str,
        dir: &Path,
        wanted: &[String],
        powered_off: bool,
        elapsed: Duration,
    ) -> Self {
        let mut names: Vec<String> = Vec::new();
        if wanted.iter().any(|s| s == "tests") {
            names.extend([
                "test-event_loop".into(),
                "test-migration".into(),
                "test-steering".into(),
            ]);
        }
        names.extend(wanted.iter().filter(|s| *s != "tests").cloned());
        let steps = names.iter().map(|n| read_step(dir, n)).collect();
        let mode = fs::read_to_string(dir.join("doctor.txt"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.contains(" steering "))
                    .and_then(|l| {
                        ["select-or-migrate", "select-only"]
                            .into_iter()
                            .find(|m| l.contains(m))
                    })
                    .map(str::to_owned)
            });
        Self {
            line: line.to_owned(),
            release: release.to_owned(),
            steps,
            powered_off,
            elapsed,
            mode,
            panicked_boots: 0,
        }
    }

    pub fn ok(&self) -> bool {
        self.powered_off && self.steps.iter().all(Step::ok)
    }

    pub fn line(&self) -> String {
        let cells: Vec<String> = self.steps.iter().map(Step::cell).collect();
        format!(
            "{} {}: {}; mode {}; {:.0} s{}{}",
            if self.ok() { "PASS" } else { "FAIL" },
            self.release,
            cells.join(", "),
            self.mode.as_deref().unwrap_or("?"),
            self.elapsed.as_secs_f64(),
            if self.powered_off {
                ""
            } else {
                " (guest did not power off)"
            },
            self.retries_note()
        )
    }

    /// Said in the line and the table, so a retried boot is never hidden.
    fn retries_note(&self) -> String {
        match self.panicked_boots {
            0 => String::new(),
            n => format!(" (kernel panicked while booting {n}x before init; booted again)"),
        }
    }
}

fn read_step(dir: &Path, name: &str) -> Step {
    let rc = fs::read_to_string(dir.join(format!("{name}.rc")))
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|n| n.parse().ok()));
    let text = fs::read_to_string(dir.join(format!("{name}.txt"))).unwrap_or_default();
    Step {
        name: name.to_owned(),
        rc,
        counts: counts(&text),
        skipped: text
            .lines()
            .filter(|l| l.starts_with("SKIPPED "))
            .map(str::to_owned)
            .collect(),
    }
}

/// Passed and total from cargo test's `test result:` lines, or from the e2e
/// script's `e2e: N passed, M failed` line.
fn counts(text: &str) -> Option<(u32, u32)> {
    let mut found = None;
    for line in text.lines() {
        let rest = line
            .strip_prefix("test result: ")
            .map(|r| r.split_once(". ").map_or(r, |(_, r)| r))
            .or_else(|| line.strip_prefix("e2e: "));
        let Some(rest) = rest else { continue };
        let number = |word: &str| {
            rest.split(';').flat_map(|p| p.split(',')).find_map(|p| {
                p.trim()
                    .strip_suffix(word)
                    .and_then(|n| n.trim().parse::<u32>().ok())
            })
        };
        if let (Some(p), Some(f)) = (number("passed"), number("failed")) {
            let (tp, tt) = found.unwrap_or((0, 0));
            found = Some((tp + p, tt + p + f));
        }
    }
    found
}

pub fn table(rows: &[Row]) {
    println!("\nkernel matrix:");
    println!("| kernel | release | mode | steps | seconds | verdict |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        let cells: Vec<String> = r.steps.iter().map(Step::cell).collect();
        println!(
            "| {} | {} | {} | {} | {:.0} | {} |",
            r.line,
            r.release,
            r.mode.as_deref().unwrap_or("?"),
            cells.join("; "),
            r.elapsed.as_secs_f64(),
            if r.ok() { "pass" } else { "FAIL" }.to_owned() + &r.retries_note()
        );
    }
    for r in rows {
        for s in &r.steps {
            for skip in &s.skipped {
                println!("{}: {skip}", r.release);
            }
        }
    }
}

/// The end of each failed step's output and of the console.
pub fn print_failure(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    for f in files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let interesting = name == "console.log"
            || (f.extension().is_some_and(|e| e == "txt")
                && fs::read_to_string(f.with_extension("rc"))
                    .is_ok_and(|rc| !rc.starts_with("0 ")));
        if !interesting {
            continue;
        }
        let text = fs::read_to_string(&f).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("---- {} (last 40 lines)", f.display());
        for l in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("    {l}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::counts;

    #[test]
    fn counts_come_from_cargo_and_e2e_lines() {
        let cargo = "test a ... ok\ntest result: ok. 9 passed; 1 failed; 0 ignored; 0 measured\n";
        assert_eq!(counts(cargo), Some((9, 10)));
        assert_eq!(
            counts("e2e: 21 passed, 0 failed, 0 skipped\n"),
            Some((21, 21))
        );
        assert_eq!(counts("nothing here"), None);
    }
}
