//! Rate-limit cooldowns: how long a provider asked to be left alone, and the shared record of it.
//!
//! When a provider answers 429 (or 503/529), its headers say when to come back: `Retry-After`
//! (delta-seconds or an HTTP-date), `retry-after-ms`, or OpenAI's `x-ratelimit-reset-requests` /
//! `x-ratelimit-reset-tokens` (Go-style durations: `1s`, `6m0s`, `20ms`, `1h2m3.5s`). `parse`
//! reads them; `Policy::cooldown` clamps the result to sane bounds and supplies the default when a
//! 429 said nothing usable. `Cooldowns` keeps "cooling until" per upstream+model in a store shared
//! by every worker's VM (Envoy's shared data), with compare-and-swap writes that only ever extend a
//! cooldown, so concurrent 429s on several workers settle on the latest end. The store is a trait,
//! so the bookkeeping is tested natively; the host glue supplies Envoy's shared data.

use std::time::Duration;

use crate::headers::Headers;

/// Bounds and default for cooldowns, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Used when a rate-limit answer carries no usable reset header.
    pub default_ms: u64,
    pub min_ms: u64,
    pub max_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { default_ms: 10_000, min_ms: 100, max_ms: 600_000 }
    }
}

impl Policy {
    /// The cooldown for an answer whose headers asked for `asked` (None: nothing usable).
    pub fn cooldown(&self, asked: Option<Duration>) -> Duration {
        let ms = asked.map_or(self.default_ms, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Duration::from_millis(ms.clamp(self.min_ms, self.max_ms.max(self.min_ms)))
    }
}

/// How long the answer's headers ask the client to wait, `now_ms` being the current Unix time in
/// milliseconds (for HTTP-dates). `retry-after-ms` wins, then `Retry-After`, then the longest of the
/// `x-ratelimit-reset-*` headers. Garbage is ignored, never guessed at.
pub fn parse(headers: &Headers, now_ms: u64) -> Option<Duration> {
    let get = |name: &str| headers.find(|k| k.eq_ignore_ascii_case(name)).map(str::trim);
    if let Some(ms) = get("retry-after-ms").and_then(parse_millis) {
        return Some(ms);
    }
    if let Some(after) = get("retry-after").and_then(|v| parse_retry_after(v, now_ms)) {
        return Some(after);
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .iter()
        .filter_map(|name| get(name).and_then(parse_go_duration))
        .max()
}

/// `retry-after-ms`: a non-negative number of milliseconds (fractions allowed).
fn parse_millis(value: &str) -> Option<Duration> {
    let ms: f64 = value.parse().ok()?;
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64((ms / 1000.0).min(1e9)))
}

/// `Retry-After`: delta-seconds, or an HTTP-date (a date in the past means "now").
pub fn parse_retry_after(value: &str, now_ms: u64) -> Option<Duration> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = value.parse().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs.min(1_000_000_000)));
    }
    let at_ms = parse_http_date(value)?;
    Some(Duration::from_millis(at_ms.saturating_sub(now_ms)))
}

/// An HTTP-date (RFC 9110: IMF-fixdate, and the obsolete RFC 850 and asctime forms) as Unix ms.
pub fn parse_http_date(value: &str) -> Option<u64> {
    let words: Vec<&str> = value.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT     → [Sun, 06, Nov, 1994, 08:49:37, GMT]
    // RFC 850:     Sunday, 06-Nov-94 08:49:37 GMT    → [Sunday, 06-Nov-94, 08:49:37, GMT]
    // asctime:     Sun Nov  6 08:49:37 1994          → [Sun, Nov, 6, 08:49:37, 1994]
    let (year, month, day, time) = match words.as_slice() {
        [_, day, month, year, time, "GMT"] => (year.parse().ok()?, *month, *day, *time),
        [_, date, time, "GMT"] => {
            let mut parts = date.split('-');
            let (day, month, year) = (parts.next()?, parts.next()?, parts.next()?);
            let year: u32 = year.parse().ok()?;
            // Two-digit years (RFC 850): 70-99 are 19xx, the rest 20xx.
            let year = match year {
                0..=69 => 2000 + year,
                70..=99 => 1900 + year,
                _ => year,
            };
            (year, month, day, *time)
        }
        [_, month, day, time, year] => (year.parse().ok()?, *month, *day, *time),
        _ => return None,
    };
    civil_ms(year, month, day, time)
}

fn civil_ms(year: u32, month: &str, day: &str, time: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = u32::try_from(MONTHS.iter().position(|m| *m == month)?).ok()? + 1;
    let day: u32 = day.parse().ok()?;
    let mut hms = time.split(':').map(|p| p.parse::<u32>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 || !(1970..=9999).contains(&year)
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + u64::from(h) * 3600 + u64::from(m) * 60 + u64::from(s)) * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm), for years ≥ 1970.
fn days_from_civil(year: u32, month: u32, day: u32) -> u64 {
    let y = u64::from(if month <= 2 { year - 1 } else { year });
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = u64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + u64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// A Go-style duration as OpenAI sends it: `1s`, `6m0s`, `20ms`, `1h2m3.5s`, `150us`.
pub fn parse_go_duration(value: &str) -> Option<Duration> {
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest.get(..number_len)?.parse().ok()?;
        rest = rest.get(number_len..)?;
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds_per_unit = match rest.get(..unit_len)? {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = rest.get(unit_len..)?;
        total += number * seconds_per_unit;
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total.min(1e9)))
}

/// Envoy's shared data as the cooldown bookkeeping sees it: values with a version (`cas`) that
/// every write bumps; a write naming a stale version fails.
pub trait SharedStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, u32);
    /// Writes `value` if the entry's version is still `cas` (0: unconditionally).
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch>;
}

/// The entry changed since it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasMismatch;

/// Cooldowns per upstream+model, in a store all workers share.
pub struct Cooldowns<'s, S: SharedStore> {
    store: &'s S,
}

/// How many times a contended write is retried before giving up (another worker's write won, and
/// that write was at least as recent a 429).
const CAS_ATTEMPTS: usize = 8;

impl<'s, S: SharedStore> Cooldowns<'s, S> {
    pub fn new(store: &'s S) -> Self {
        Cooldowns { store }
    }

    fn key(upstream: &str, model: &str) -> String {
        // Looked up for every routed request: pushed, not formatted.
        const PREFIX: &str = "switchyard.cooldown.";
        let mut key = String::with_capacity(PREFIX.len() + upstream.len() + 1 + model.len());
        key.push_str(PREFIX);
        key.push_str(upstream);
        key.push('/');
        key.push_str(model);
        key
    }

    /// Until when (Unix ms) `upstream`+`model` is cooling; `None` when it is not (or no longer).
    pub fn until(&self, upstream: &str, model: &str, now_ms: u64) -> Option<u64> {
        let (value, _) = self.store.get(&Self::key(upstream, model));
        let until = decode(value.as_deref())?;
        (until > now_ms).then_some(until)
    }

    /// Records that `upstream`+`model` cools until `until_ms`. An existing later end is kept:
    /// writes only extend. Returns the end in force afterwards.
    pub fn start(&self, upstream: &str, model: &str, until_ms: u64) -> u64 {
        let key = Self::key(upstream, model);
        for _ in 0..CAS_ATTEMPTS {
            let (value, cas) = self.store.get(&key);
            let current = decode(value.as_deref()).unwrap_or(0);
            if current >= until_ms {
                return current;
            }
            if self.store.set(&key, until_ms.to_string().as_bytes(), cas).is_ok() {
                return until_ms;
            }
        }
        decode(self.store.get(&key).0.as_deref()).unwrap_or(until_ms)
    }
}

fn decode(value: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(value?).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        Headers::from_pairs(pairs)
    }

    const NOW: u64 = 784_111_777_000; // Sun, 06 Nov 1994 08:49:37 GMT

    type Case = (&'static [(&'static str, &'static str)], Option<u64>);

    #[test]
    fn retry_after_forms() {
        let cases: &[Case] = &[
            (&[("retry-after", "2")], Some(2000)),
            (&[("Retry-After", " 120 ")], Some(120_000)),
            (&[("retry-after", "0")], Some(0)),
            (&[("retry-after", "Sun, 06 Nov 1994 08:49:47 GMT")], Some(10_000)),
            (&[("retry-after", "Sunday, 06-Nov-94 08:50:37 GMT")], Some(60_000)),
            (&[("retry-after", "Sun Nov  6 08:49:39 1994")], Some(2000)),
            (&[("retry-after", "Sun, 06 Nov 1994 08:00:00 GMT")], Some(0)),
            (&[("retry-after-ms", "1500")], Some(1500)),
            (&[("retry-after-ms", "12.5"), ("retry-after", "9")], Some(12)),
            (&[("x-ratelimit-reset-requests", "1s")], Some(1000)),
            (&[("x-ratelimit-reset-requests", "6m0s")], Some(360_000)),
            (&[("x-ratelimit-reset-tokens", "20ms")], Some(20)),
            (&[("x-ratelimit-reset-requests", "1s"), ("x-ratelimit-reset-tokens", "1h2m3.5s")], Some(3_723_500)),
            (&[("retry-after", "soon"), ("x-ratelimit-reset-tokens", "250ms")], Some(250)),
            (&[("retry-after", "soon")], None),
            (&[("retry-after", "-5")], None),
            (&[("retry-after", "1.5")], None),
            (&[("retry-after-ms", "-1")], None),
            (&[("retry-after-ms", "NaN")], None),
            (&[("x-ratelimit-reset-requests", "5")], None),
            (&[("x-ratelimit-reset-requests", "1x")], None),
            (&[("x-ratelimit-reset-requests", "")], None),
            (&[("retry-after", "Sun, 32 Nov 1994 08:49:37 GMT")], None),
            (&[("retry-after", "Sun, 06 Foo 1994 08:49:37 GMT")], None),
            (&[("retry-after", "Sun, 06 Nov 1994 25:49:37 GMT")], None),
            (&[], None),
        ];
        for (headers, want) in cases {
            let got = parse(&h(headers), NOW).map(|d| d.as_millis() as u64);
            assert_eq!(got, *want, "{headers:?}");
        }
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let d = parse(&h(&[("retry-after", "99999999999999999999999")]), NOW).unwrap();
        assert!(d >= Duration::from_secs(1_000_000_000));
        assert!(parse(&h(&[("retry-after-ms", "1e308")]), NOW).is_some());
        assert!(parse_go_duration("99999999999h").is_some());
        assert_eq!(parse_http_date("Fri, 31 Dec 9999 23:59:59 GMT"), Some(253_402_300_799_000));
    }

    #[test]
    fn dates_match_known_epochs() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(NOW));
        assert_eq!(parse_http_date("Tue, 29 Feb 2028 12:00:00 GMT"), Some(1_835_438_400_000));
        assert_eq!(parse_http_date("Mon, 23 Nov 2026 05:22:56 GMT"), Some(1_795_411_376_000));
    }

    #[test]
    fn policy_clamps_and_defaults() {
        let p = Policy { default_ms: 5000, min_ms: 100, max_ms: 60_000 };
        assert_eq!(p.cooldown(None), Duration::from_millis(5000));
        assert_eq!(p.cooldown(Some(Duration::from_millis(0))), Duration::from_millis(100));
        assert_eq!(p.cooldown(Some(Duration::from_secs(3600))), Duration::from_secs(60));
        assert_eq!(p.cooldown(Some(Duration::from_secs(7))), Duration::from_secs(7));
    }

    /// Envoy-like shared data: versions start at 1 and bump on every write.
    #[derive(Default)]
    struct Store {
        map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        /// Writes another worker slips in before each of ours, to simulate contention.
        interfere: RefCell<Vec<u64>>,
    }

    impl SharedStore for Store {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
            match self.map.borrow().get(key) {
                Some((v, cas)) => (Some(v.clone()), *cas),
                None => (None, 0),
            }
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
            if let Some(other) = self.interfere.borrow_mut().pop() {
                let mut map = self.map.borrow_mut();
                let entry = map.entry(key.to_owned()).or_insert((Vec::new(), 0));
                *entry = (other.to_string().into_bytes(), entry.1 + 1);
            }
            let mut map = self.map.borrow_mut();
            let current = map.get(key).map_or(0, |(_, c)| *c);
            if cas != 0 && cas != current {
                return Err(CasMismatch);
            }
            map.insert(key.to_owned(), (value.to_vec(), current + 1));
            Ok(())
        }
    }

    #[test]
    fn cooldowns_start_expire_and_only_extend() {
        let store = Store::default();
        let c = Cooldowns::new(&store);
        assert_eq!(c.until("openai", "gpt", 1000), None);
        assert_eq!(c.start("openai", "gpt", 5000), 5000);
        assert_eq!(c.until("openai", "gpt", 1000), Some(5000));
        assert_eq!(c.until("openai", "other", 1000), None, "per model");
        assert_eq!(c.start("openai", "gpt", 3000), 5000, "an earlier end does not shorten it");
        assert_eq!(c.start("openai", "gpt", 8000), 8000);
        assert_eq!(c.until("openai", "gpt", 8000), None, "expires by itself");
    }

    #[test]
    fn contended_writes_settle_on_the_latest_end() {
        let store = Store::default();
        let c = Cooldowns::new(&store);
        c.start("u", "m", 1000);
        // Another worker writes 4000 just before our first CAS: ours (6000) retries and wins.
        store.interfere.borrow_mut().push(4000);
        assert_eq!(c.start("u", "m", 6000), 6000);
        assert_eq!(c.until("u", "m", 0), Some(6000));
        // Another worker writes a later end (9000) before ours (7000): theirs is kept.
        store.interfere.borrow_mut().push(9000);
        assert_eq!(c.start("u", "m", 7000), 9000);
        // Endless contention: give up after a bounded number of tries, keeping what is there.
        store.interfere.borrow_mut().extend([100, 200, 300, 400, 500, 600, 700, 800, 900]);
        let end = c.start("u", "m", 99_000);
        assert!(end <= 99_000);
    }

    #[test]
    fn garbage_in_the_store_is_not_a_cooldown() {
        let store = Store::default();
        store.map.borrow_mut().insert("switchyard.cooldown.u/m".into(), (b"not a number".to_vec(), 1));
        let c = Cooldowns::new(&store);
        assert_eq!(c.until("u", "m", 0), None);
        assert_eq!(c.start("u", "m", 500), 500);
    }
}
