use serde_json::{Value, json};

use super::*;

const NOW: u64 = 1_000_000;

fn limits() -> Limits {
    Limits {
        max_size: 1 << 20,
        max_entry_size: 64 << 10,
        max_entries: 100,
    }
}

fn key(path: &str) -> Key {
    Key {
        origin: "http://api.test".into(),
        method: "GET".into(),
        path: path.into(),
    }
}

fn put(path: &str, body: &str) -> Put {
    Put {
        key: key(path),
        vary: None,
        delete_at: NOW + 60_000,
        tags: Vec::new(),
        meta: Arc::from("{}"),
        body: Bytes::from(body.to_owned()),
    }
}

fn headers(v: &Value) -> Headers {
    v.as_object().cloned().unwrap_or_default()
}

fn body(store: &mut Store, path: &str, h: &Headers, now: u64) -> Option<String> {
    store
        .get(&key(path), h, now)
        .map(|hit| String::from_utf8(hit.body.to_vec()).unwrap())
}

#[test]
fn a_stored_response_is_found_until_it_expires() {
    let mut s = Store::new(limits());
    let none = Headers::new();
    assert_eq!(body(&mut s, "/a", &none, NOW), None);
    s.put(put("/a", "one"), NOW).unwrap();
    assert_eq!(body(&mut s, "/a", &none, NOW + 1).as_deref(), Some("one"));
    assert_eq!(body(&mut s, "/b", &none, NOW + 1), None);
    // Another method is another response.
    let head = Key {
        method: "HEAD".into(),
        ..key("/a")
    };
    assert!(s.get(&head, &none, NOW).is_none());
    assert_eq!(body(&mut s, "/a", &none, NOW + 60_000), None);
    let st = s.stats();
    assert_eq!((st.hits, st.misses, st.stores), (1, 4, 1));
    assert_eq!((st.entries, st.bytes), (0, 0), "the expired entry is gone");
}

#[test]
fn variants_follow_vary() {
    let mut s = Store::new(limits());
    for (lang, text) in [("en", "hello"), ("fr", "bonjour")] {
        s.put(
            Put {
                vary: Some(headers(&json!({ "accept-language": lang }))),
                ..put("/greet", text)
            },
            NOW,
        )
        .unwrap();
    }
    let fr = headers(&json!({ "accept-language": "fr", "x-other": "1" }));
    assert_eq!(body(&mut s, "/greet", &fr, NOW).as_deref(), Some("bonjour"));
    let en = headers(&json!({ "accept-language": "en" }));
    assert_eq!(body(&mut s, "/greet", &en, NOW).as_deref(), Some("hello"));
    // A request without the header matches only a variant stored without it.
    assert_eq!(body(&mut s, "/greet", &Headers::new(), NOW), None);
    s.put(
        Put {
            vary: Some(headers(&json!({ "accept-language": null }))),
            ..put("/greet", "hi")
        },
        NOW,
    )
    .unwrap();
    assert_eq!(
        body(&mut s, "/greet", &Headers::new(), NOW).as_deref(),
        Some("hi")
    );
    // The same variant again replaces it.
    s.put(
        Put {
            vary: Some(headers(&json!({ "accept-language": "fr" }))),
            ..put("/greet", "salut")
        },
        NOW,
    )
    .unwrap();
    assert_eq!(body(&mut s, "/greet", &fr, NOW).as_deref(), Some("salut"));
    assert_eq!(s.stats().entries, 3);
}

#[test]
fn limits_evict_the_least_recently_used() {
    let mut s = Store::new(Limits {
        max_entries: 3,
        ..limits()
    });
    for p in ["/1", "/2", "/3"] {
        s.put(put(p, "x"), NOW).unwrap();
    }
    // /1 used again: /2 is now the least recently used.
    assert!(body(&mut s, "/1", &Headers::new(), NOW).is_some());
    s.put(put("/4", "x"), NOW).unwrap();
    assert!(body(&mut s, "/2", &Headers::new(), NOW).is_none());
    for p in ["/1", "/3", "/4"] {
        assert!(body(&mut s, p, &Headers::new(), NOW).is_some(), "{p}");
    }
    assert_eq!(s.stats().evictions, 1);

    // By size: each entry costs its bytes plus the overhead.
    let big = "y".repeat(1000);
    let mut s = Store::new(Limits {
        max_size: 2500,
        ..limits()
    });
    for p in ["/a", "/b", "/c"] {
        s.put(put(p, &big), NOW).unwrap();
    }
    let st = s.stats();
    assert_eq!((st.entries, st.evictions), (2, 1));
    assert!(st.bytes <= 2500, "{st:?}");
    assert!(body(&mut s, "/a", &Headers::new(), NOW).is_none());
}

#[test]
fn an_entry_over_the_entry_limit_is_refused() {
    let mut s = Store::new(Limits {
        max_entry_size: 1000,
        ..limits()
    });
    let err = s.put(put("/big", &"z".repeat(1000)), NOW).unwrap_err();
    assert!(matches!(err, Refused::TooLarge { max: 1000, .. }), "{err}");
    assert_eq!(
        s.put(
            Put {
                delete_at: NOW,
                ..put("/old", "x")
            },
            NOW
        ),
        Err(Refused::Expired)
    );
    let st = s.stats();
    assert_eq!((st.entries, st.too_large, st.stores), (0, 1, 0));
}

#[test]
fn invalidation_by_tag_and_by_path() {
    let mut s = Store::new(limits());
    let tagged = |p: &str, tags: &[&str]| Put {
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        ..put(p, "x")
    };
    s.put(tagged("/p/1", &["product", "p1"]), NOW).unwrap();
    s.put(tagged("/p/2", &["product", "p2"]), NOW).unwrap();
    s.put(tagged("/home", &["home"]), NOW).unwrap();
    assert_eq!(s.delete_tags(&["p1".into()]), 1);
    assert!(body(&mut s, "/p/1", &Headers::new(), NOW).is_none());
    assert!(body(&mut s, "/p/2", &Headers::new(), NOW).is_some());
    assert_eq!(s.delete_tags(&["product".into(), "home".into()]), 2);
    assert_eq!(s.stats().entries, 0);
    assert_eq!(s.delete_tags(&["product".into()]), 0);

    s.put(put("/q?x=1", "x"), NOW).unwrap();
    s.put(
        Put {
            vary: Some(headers(&json!({ "accept": "a" }))),
            ..put("/q?x=1", "y")
        },
        NOW,
    )
    .unwrap();
    assert_eq!(s.delete_path("http://api.test", "/q?x=1"), 2);
    assert_eq!(s.delete_path("http://api.test", "/q?x=1"), 0);
    let st = s.stats();
    assert_eq!((st.invalidations, st.bytes), (5, 0));
    assert!(
        s.by_tag.is_empty() && s.by_path.is_empty(),
        "indexes emptied"
    );
}

#[test]
fn a_lease_has_one_holder_until_released_or_expired() {
    let mut s = Store::new(limits());
    assert!(s.lease("k", "a", 1000, NOW), "free: granted");
    assert!(!s.lease("k", "b", 1000, NOW + 10), "held by a");
    assert!(s.lease("k", "a", 1000, NOW + 10), "a again: extended");
    assert!(s.lease("other", "b", 1000, NOW + 10), "another key");
    // Released by its holder only.
    assert!(!s.lease("k", "b", 0, NOW + 20));
    assert!(!s.lease("k", "b", 1000, NOW + 20), "b cannot release it");
    assert!(!s.lease("k", "a", 0, NOW + 20), "a release is not a grant");
    assert!(s.lease("k", "b", 1000, NOW + 20), "released: b gets it");
    // Expired: anyone gets it.
    assert!(s.lease("k", "c", 1000, NOW + 1020));
    // The lifetime is bounded.
    assert!(s.lease("long", "a", u64::MAX, NOW));
    assert!(s.lease("long", "b", 1000, NOW + MAX_LEASE_MS));
    // Leases are not entries.
    assert_eq!(s.stats().entries, 0);
}

#[test]
fn leases_are_bounded_and_granted_past_the_bound() {
    let mut s = Store::new(limits());
    for i in 0..MAX_LEASES {
        assert!(s.lease(&i.to_string(), "a", 100, NOW));
    }
    // Full of live leases: granted, not recorded (work done twice, never
    // refused).
    assert!(s.lease("new", "a", 100, NOW));
    assert!(s.lease("new", "b", 100, NOW));
    // Once they expire, the new one is recorded again.
    assert!(s.lease("new", "a", 100, NOW + 200));
    assert!(!s.lease("new", "b", 100, NOW + 200));
    assert_eq!(s.leases.len(), 1);
}
