//! Scoring and training never panic, whatever bytes a request carries.

use gatewatch_models::content::{ContentConfig, ContentProfiles, ContentRequest};
use proptest::prelude::*;

fn trained() -> ContentProfiles {
    let mut p = ContentProfiles::new(ContentConfig {
        min_samples: 5,
        ..ContentConfig::default()
    });
    for i in 0..50 {
        let q = format!("id={i}&name=item{i}&mode=a");
        p.observe(&ContentRequest::new("GET", "/items", Some(&q), Some("k=v")));
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_requests_score_in_range(
        query in proptest::collection::vec(any::<u8>(), 0..600),
        body in proptest::collection::vec(any::<u8>(), 0..300),
        template in prop_oneof![Just("/items".to_owned()), ".{0,40}"],
        method in prop_oneof![Just("GET".to_owned()), ".{0,8}"],
    ) {
        let mut p = trained();
        let q = String::from_utf8_lossy(&query);
        let b = String::from_utf8_lossy(&body);
        let req = ContentRequest::new(&method, &template, Some(&q), Some(&b));
        let s = p.score(&req);
        prop_assert!(s.score.is_finite() && (0.0..=1.0).contains(&s.score), "{s:?}");
        // Learning hostile input must not break later scoring either.
        p.observe(&req);
        let s = p.score(&req);
        prop_assert!(s.score.is_finite() && (0.0..=1.0).contains(&s.score), "{s:?}");
    }

    #[test]
    fn percent_encoded_bytes_decode_safely(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut enc = String::from("id=");
        for b in &raw {
            enc.push_str(&format!("%{b:02X}"));
        }
        let p = trained();
        let s = p.score(&ContentRequest::new("GET", "/items", Some(&enc), None));
        prop_assert!(s.score.is_finite() && (0.0..=1.0).contains(&s.score));
    }
}
