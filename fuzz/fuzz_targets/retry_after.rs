//! Retry-After and reset-header parsers: arbitrary text as the values of `retry-after`,
//! `retry-after-ms`, `x-ratelimit-reset-requests` and `x-ratelimit-reset-tokens` (one line each),
//! through `cooldown::parse`, `parse_retry_after`, `parse_http_date` and `parse_go_duration`, and the
//! result through `Policy::cooldown` with a policy drawn from the input.
//!
//! Properties: no panic; durations stay within the documented caps; an HTTP-date that the
//! `httpdate` crate also reads gives the same instant; a Go duration made of whole numbers gives the
//! exact sum; the policy's bounds always hold.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use switchyard::cooldown::{self, Policy};
use switchyard::headers::Headers;
use switchyard_fuzz::Dice;

const NAMES: [&str; 4] = ["retry-after", "retry-after-ms", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"];
/// 9999-12-31 23:59:60 GMT, the latest instant an HTTP-date can name here, in ms.
const LAST_DATE_MS: u64 = 253_402_300_800_000;
/// The cap on a delay given as a number (seconds or Go duration).
const CAP_SECS: u64 = 1_000_000_000;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut dice = Dice::new(data);
    let now_ms = match dice.below(3) {
        0 => 784_111_777_000, // Sun, 06 Nov 1994 08:49:37 GMT
        1 => dice.roll() % LAST_DATE_MS,
        _ => dice.roll(),
    };

    let pairs: Vec<(String, String)> = text
        .split('\n')
        .zip(NAMES.iter().cycle())
        .filter(|(value, _)| !value.is_empty())
        .map(|(value, name)| {
            let name = if dice.below(4) == 0 { name.to_ascii_uppercase() } else { (*name).to_owned() };
            (name, value.to_owned())
        })
        .collect();
    let headers = Headers::from_pairs(&pairs);
    let asked = cooldown::parse(&headers, now_ms);
    if let Some(d) = asked {
        assert!(d.as_millis() <= u128::from(LAST_DATE_MS.max(CAP_SECS * 1000)), "{d:?} from {headers:?}");
    }

    for value in text.split('\n').map(str::trim) {
        if let Some(d) = cooldown::parse_retry_after(value, now_ms) {
            assert!(d.as_millis() <= u128::from(LAST_DATE_MS.max(CAP_SECS * 1000)));
        }
        check_http_date(value);
        check_go_duration(value);
    }

    // The policy: a cooldown is always within [min, max] (max below min counts as min).
    let small = |dice: &mut Dice| if dice.below(2) == 0 { dice.below(700_000) } else { dice.roll() };
    let policy = Policy { default_ms: small(&mut dice), min_ms: small(&mut dice), max_ms: small(&mut dice) };
    for asked in [asked, None, Some(Duration::MAX), Some(Duration::ZERO)] {
        let ms = u64::try_from(policy.cooldown(asked).as_millis()).expect("a cooldown fits u64 ms");
        let (low, high) = (policy.min_ms, policy.max_ms.max(policy.min_ms));
        assert!((low..=high).contains(&ms), "{ms} outside {low}..={high} for {asked:?}");
        let wanted = asked.map_or(policy.default_ms, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        if (low..=high).contains(&wanted) {
            assert_eq!(ms, wanted, "a cooldown within bounds is kept as asked");
        }
    }
});

fn check_http_date(value: &str) {
    let Some(ms) = cooldown::parse_http_date(value) else { return };
    assert!(ms % 1000 == 0 && ms <= LAST_DATE_MS, "{value:?} -> {ms}");
    if let Ok(time) = httpdate::parse_http_date(value) {
        let theirs = time.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).ok();
        assert_eq!(theirs, Some(u128::from(ms)), "{value:?}: httpdate reads another instant");
    }
    // A date switchyard reads is a date: formatting it back reads the same instant.
    if ms < LAST_DATE_MS {
        let formatted = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(cooldown::parse_http_date(&formatted), Some(ms), "{value:?} -> {formatted}");
    }
}

fn check_go_duration(value: &str) {
    let Some(d) = cooldown::parse_go_duration(value) else { return };
    assert!(d.as_secs() <= CAP_SECS, "{value:?} -> {d:?}");
    // Whole numbers only: the exact sum, in nanoseconds.
    if value.contains('.') {
        return;
    }
    let mut rest = value.trim();
    let mut exact: u128 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let Ok(n) = rest[..digits].parse::<u128>() else { return };
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let nanos: u128 = match &rest[..unit] {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            other => panic!("{value:?} accepted with unit {other:?}"),
        };
        exact = exact.saturating_add(n.saturating_mul(nanos));
        rest = &rest[unit..];
    }
    let exact = exact.min(u128::from(CAP_SECS) * 1_000_000_000);
    let got = d.as_nanos();
    // Read through floating point: close, not exact.
    let error = got.abs_diff(exact);
    assert!(error <= exact / 1_000_000_000 + 1_000, "{value:?}: {got} ns, exactly {exact} ns");
}
