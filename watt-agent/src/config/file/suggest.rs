//! "Did you mean": the known key an unknown one was probably meant to be.

/// The known key closest to `key`, if it is close.
pub(super) fn suggest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    // Names users bring from PM2 ecosystem files.
    let alias = match key {
        "instances" => Some("workers"),
        "script" | "args" | "interpreter" => Some("command"),
        "listen_timeout" => Some("start_timeout"),
        "exp_backoff_restart_delay" => Some("restart_delay"),
        "max_memory" => Some("max_memory_restart"),
        "uid" => Some("user"),
        "gid" => Some("group"),
        _ => None,
    };
    if alias.is_some() {
        return alias;
    }
    let normalized = key.to_ascii_lowercase().replace('-', "_");
    known
        .iter()
        .map(|k| (distance(&normalized, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}
