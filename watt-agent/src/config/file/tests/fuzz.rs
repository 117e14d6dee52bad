//! Fuzzing the file parser: arbitrary text, arbitrary settings and
//! mutated examples all end in a layer or one clear error, never a panic.
use std::fmt::Write as _;

use proptest::prelude::*;

use super::*;

/// The property every input must have: a layer, or one `FileError::Parse`
/// whose line exists, and no panic; a layer then resolves or names a key.
fn check_any(text: &str) -> Result<(), TestCaseError> {
    match parse(Path::new(PATH), text) {
        Ok(file) => {
            let cli = Layer {
                command: Some(vec!["node".into()]),
                ..Layer::default()
            };
            // The command line gives the command, so the only refusal left
            // is a value rule, and it names one of the keys.
            if let Err(e) = config::resolve(&[&cli, &file.layer]) {
                prop_assert!(
                    matches!(&e, config::ConfigError::Invalid { key, .. } if Layer::KEYS.contains(key)),
                    "{e}"
                );
            }
        }
        Err(FileError::Parse { line, message, .. }) => {
            prop_assert!(
                line >= 1 && line <= text.lines().count().max(1) + 1,
                "line {line}"
            );
            prop_assert!(!message.is_empty());
            prop_assert!(!message.contains('\n'), "{message:?}");
        }
        Err(e) => prop_assert!(false, "unexpected error {e}"),
    }
    Ok(())
}

/// TOML fragments for values of every type, good and bad.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (-5i64..70_000).prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-z0-9 .:/\\-\\[\\]]{0,12}".prop_map(|s| format!("{s:?}")),
        Just("\"auto\"".to_owned()),
        Just("\"-1s\"".to_owned()),
        Just("\"1m 30s\"".to_owned()),
        Just("\"512M\"".to_owned()),
        Just("[\"node\", \"app.js\"]".to_owned()),
        Just("[]".to_owned()),
        Just("[1, \"x\"]".to_owned()),
        Just("{ A = \"1\", B = 2 }".to_owned()),
        Just("{ A = [] }".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        Just("inf".to_owned()),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(Layer::KEYS).prop_map(str::to_owned),
        1 => "[a-z_]{1,10}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,300}") {
        check_any(&text)?;
    }

    #[test]
    fn arbitrary_settings_never_panic(lines in proptest::collection::vec((key(), value()), 0..12)) {
        let text = lines.iter().fold(String::new(), |mut text, (k, v)| {
            let _ = writeln!(text, "{k} = {v}");
            text
        });
        check_any(&text)?;
        // A single bad setting is reported on its own line with its key.
        if let [(k, _)] = lines.as_slice()
            && let Err(FileError::Parse { line, key: Some(named), .. }) = parse(Path::new(PATH), &text)
        {
            prop_assert_eq!(line, 1);
            prop_assert!(named == *k || named.starts_with(&format!("{k}.")), "{} for {}", named, k);
        }
    }

    #[test]
    fn mutated_examples_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<char>()), 1..8)
    ) {
        let mut text: Vec<char> = example_uncommented().chars().collect();
        for (at, op, c) in edits {
            let i = at.index(text.len().max(1)).min(text.len());
            match op {
                0 => { text.insert(i, c); }
                1 if i < text.len() => { text.remove(i); }
                2 => { text.insert(i, '\n'); }
                _ => {
                    let end = (i + 16).min(text.len());
                    text.drain(i..end);
                }
            }
        }
        let text: String = text.into_iter().collect();
        check_any(&text)?;
    }
}
