//! Where things are in the config file's text: the keys with their spans
//! (to name the key of an error serde reports by position) and lines.
use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// A key of the document with where it is.
pub(super) struct KeyAt {
    pub(super) name: String,
    pub(super) line: usize,
    key: Range<usize>,
    value: Range<usize>,
    /// Keys of a table value (for `env.NAME` in messages).
    children: Vec<KeyAt>,
}

pub(super) struct Keys {
    /// Top-level keys in file order.
    pub(super) top: Vec<KeyAt>,
}

impl Keys {
    pub(super) fn of(doc: &DeTable<'_>, text: &str) -> Self {
        fn collect(table: &DeTable<'_>, text: &str, depth: usize) -> Vec<KeyAt> {
            let mut keys: Vec<KeyAt> = table
                .iter()
                .map(|(k, v)| {
                    let children = match v.get_ref() {
                        DeValue::Table(t) if depth == 0 => collect(t, text, 1),
                        _ => Vec::new(),
                    };
                    KeyAt {
                        name: k.get_ref().to_string(),
                        line: line_at(text.as_bytes(), k.span().start),
                        key: k.span(),
                        value: v.span(),
                        children,
                    }
                })
                .collect();
            keys.sort_by_key(|k| k.key.start);
            keys
        }
        Self {
            top: collect(doc, text, 0),
        }
    }

    /// The key whose value (or name) contains byte `pos`: `env.NAME` for a
    /// variable of the `env` table.
    pub(super) fn at(&self, pos: usize) -> Option<String> {
        let within = |k: &KeyAt| k.value.contains(&pos) || k.key.contains(&pos);
        for k in &self.top {
            if let Some(child) = k.children.iter().find(|c| within(c)) {
                return Some(format!("{}.{}", k.name, child.name));
            }
        }
        self.top.iter().find(|k| within(k)).map(|k| k.name.clone())
    }

    pub(super) fn line(&self, key: &str) -> Option<usize> {
        self.top.iter().find(|k| k.name == key).map(|k| k.line)
    }
}

/// The 1-based line of byte `pos` (of text that may not be valid UTF-8).
#[expect(
    clippy::naive_bytecount,
    reason = "a config file is a few KiB, read once: not worth a crate"
)]
pub(super) fn line_at(text: &[u8], pos: usize) -> usize {
    let end = pos.min(text.len());
    text[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The key assigned on `line` (`key = ...`), for syntax errors.
pub(super) fn key_on_line(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?.trim_start();
    let key = l.split_once('=').map_or(l, |(k, _)| k);
    let key = key.trim().trim_matches('"');
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    bare.then(|| key.to_owned())
}
