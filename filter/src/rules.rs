//! Category rules as compiled from the configuration, and how one is tested against a request.
//!
//! A rule reads only `Facts`: the request's path, headers and what `request` extracted from the
//! body. It never touches the host, so it is tested natively. Combinators (`all`, `any`, `not`)
//! short-circuit, and leaf tests that need the message text are only reached when an earlier,
//! cheaper test has not already decided.

use regex::Regex;
use serde::Deserialize;

use crate::keywords::Keywords;
use crate::request::{Facts, TextSource as Source};

/// Which message text a `text` rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextSource {
    /// System and developer messages, and the Responses API's `instructions`.
    System,
    /// The last user message (or the whole prompt/input when the endpoint has no roles).
    LastUser,
    /// All message text.
    All,
}

impl From<TextSource> for Source {
    fn from(s: TextSource) -> Self {
        match s {
            TextSource::System => Source::System,
            TextSource::LastUser => Source::LastUser,
            TextSource::All => Source::All,
        }
    }
}

#[derive(Debug)]
pub enum Rule {
    All(Vec<Rule>),
    Any(Vec<Rule>),
    Not(Box<Rule>),
    Header {
        name: String,
        test: HeaderTest,
    },
    Path(TextMatch),
    Model(TextMatch),
    User(TextMatch),
    Metadata {
        key: String,
        test: TextMatch,
    },
    Text {
        source: TextSource,
        pattern: TextPattern,
    },
    Tokens {
        min: u64,
        max: u64,
    },
    JsonMode(bool),
    Tools(bool),
    Stream(bool),
    /// Stands in for a rule that failed to compile; never part of a loaded config.
    Never,
}

/// What a `text` rule looks for in the message text.
#[derive(Debug)]
pub enum TextPattern {
    /// `matches`, or `keywords` the fast search cannot take.
    Regex(Regex),
    /// `keywords`.
    Keywords(Keywords),
}

impl TextPattern {
    pub fn is_match(&self, text: &str) -> bool {
        match self {
            TextPattern::Regex(re) => re.is_match(text),
            TextPattern::Keywords(k) => k.is_match(text),
        }
    }
}

#[derive(Debug)]
pub enum HeaderTest {
    Present(bool),
    Text(TextMatch),
}

#[derive(Debug)]
pub enum TextMatch {
    Equals(String),
    Prefix(String),
    Glob(Glob),
    Regex(Regex),
    OneOf(Vec<String>),
    /// Stands in for a test that failed to compile; never part of a loaded config.
    Never,
}

impl TextMatch {
    pub fn test(&self, value: &str) -> bool {
        match self {
            TextMatch::Equals(v) => value == v,
            TextMatch::Prefix(p) => value.starts_with(p.as_str()),
            TextMatch::Glob(g) => g.matches(value),
            TextMatch::Regex(re) => re.is_match(value),
            TextMatch::OneOf(vs) => vs.iter().any(|v| v == value),
            TextMatch::Never => false,
        }
    }
}

impl Rule {
    /// Whether the request described by `facts` satisfies this rule.
    pub fn matches(&self, facts: &Facts<'_>) -> bool {
        match self {
            Rule::All(rules) => rules.iter().all(|r| r.matches(facts)),
            Rule::Any(rules) => rules.iter().any(|r| r.matches(facts)),
            Rule::Not(rule) => !rule.matches(facts),
            Rule::Header { name, test } => {
                let mut values = facts.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
                match test {
                    HeaderTest::Present(want) => values.next().is_some() == *want,
                    HeaderTest::Text(m) => values.any(|v| m.test(v)),
                }
            }
            Rule::Path(m) => m.test(facts.path),
            Rule::Model(m) => m.test(&facts.body.model.value),
            Rule::User(m) => facts.body.user.as_deref().is_some_and(|u| m.test(u)),
            Rule::Metadata { key, test } => facts.body.metadata_value(key).is_some_and(|v| test.test(&v)),
            Rule::Text { source, pattern } => pattern.is_match(facts.text((*source).into())),
            Rule::Tokens { min, max } => (*min..=*max).contains(&facts.token_estimate()),
            Rule::JsonMode(want) => facts.body.json_mode == *want,
            Rule::Tools(want) => facts.body.tools == *want,
            Rule::Stream(want) => facts.body.stream == *want,
            Rule::Never => false,
        }
    }
}

/// A shell-style pattern: `*` matches any run of characters, `?` any one character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(Vec<GlobToken>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum GlobToken {
    Literal(char),
    AnyOne,
    AnyRun,
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Glob(
            pattern
                .chars()
                .map(|c| match c {
                    '*' => GlobToken::AnyRun,
                    '?' => GlobToken::AnyOne,
                    c => GlobToken::Literal(c),
                })
                .collect(),
        )
    }

    /// Iterative matcher with single backtrack point: linear in practice, never exponential. The
    /// text is walked by character where it stands (`t` is a byte offset), without a copy.
    pub fn matches(&self, text: &str) -> bool {
        let char_at = |t: usize| text.get(t..).and_then(|rest| rest.chars().next());
        let (mut p, mut t) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while let Some(tc) = char_at(t) {
            match self.0.get(p) {
                Some(GlobToken::AnyRun) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(GlobToken::AnyOne) => {
                    p += 1;
                    t += tc.len_utf8();
                }
                Some(GlobToken::Literal(c)) if *c == tc => {
                    p += 1;
                    t += tc.len_utf8();
                }
                _ => match star {
                    Some((sp, st)) => {
                        let next = st + char_at(st).map_or(1, char::len_utf8);
                        p = sp + 1;
                        t = next;
                        star = Some((sp, next));
                    }
                    None => return false,
                },
            }
        }
        self.0.get(p..).is_some_and(|rest| rest.iter().all(|tok| *tok == GlobToken::AnyRun))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        let cases = [
            ("extract-*", "extract-fields", true),
            ("extract-*", "extract-", true),
            ("extract-*", "extract", false),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("gpt-?o", "gpt-4o", true),
            ("gpt-?o", "gpt-40o", false),
            ("*-mini", "gpt-4o-mini", true),
            ("*a*b*c", "xxaxxbxxc", true),
            ("*a*b*c", "xxaxxcxxb", false),
            ("a**b", "ab", true),
            ("naïve-*", "naïve-model", true),
            ("*?", "", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(Glob::new(pattern).matches(text), want, "{pattern} vs {text}");
        }
    }

    /// The matcher walks the text in place; a matcher over a copy of its characters, as it was
    /// once written, agrees with it on generated patterns and texts with multi-byte characters.
    #[test]
    fn glob_agrees_with_matching_over_a_char_copy() {
        fn by_chars(pattern: &str, text: &str) -> bool {
            let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
            let (mut i, mut j, mut star) = (0, 0, None);
            while j < t.len() {
                match p.get(i) {
                    Some('*') => {
                        star = Some((i, j));
                        i += 1;
                    }
                    Some(c) if *c == '?' || Some(c) == t.get(j) => {
                        i += 1;
                        j += 1;
                    }
                    _ => match star {
                        Some((si, sj)) => {
                            (i, j) = (si + 1, sj + 1);
                            star = Some((si, sj + 1));
                        }
                        None => return false,
                    },
                }
            }
            p.get(i..).is_some_and(|rest| rest.iter().all(|c| *c == '*'))
        }
        let alphabet = ['a', 'é', '€', '𝄞', '*', '?'];
        let mut next = crate::testing::xorshift(0x2545_f491_4f6c_dd1d);
        let mut word = |max: u64, alphabet: &[char]| -> String {
            let len = next() % max;
            (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect()
        };
        let mut matched = 0;
        for _ in 0..20_000 {
            let pattern = word(6, &alphabet);
            let text = word(8, &alphabet[..4]);
            let want = by_chars(&pattern, &text);
            assert_eq!(Glob::new(&pattern).matches(&text), want, "{pattern} vs {text}");
            matched += usize::from(want);
        }
        assert!(matched > 1000 && matched < 19_000, "{matched} of 20000 match: the cases test too little");
    }

    #[test]
    fn glob_is_not_exponential() {
        let pattern = "*a".repeat(30) + "b";
        let text = "a".repeat(5000);
        assert!(!Glob::new(&pattern).matches(&text));
    }

    #[test]
    fn text_match_kinds() {
        assert!(TextMatch::Equals("a".into()).test("a"));
        assert!(!TextMatch::Equals("a".into()).test("A"));
        assert!(TextMatch::Prefix("ab".into()).test("abc"));
        assert!(TextMatch::OneOf(vec!["x".into(), "y".into()]).test("y"));
        assert!(TextMatch::Regex(Regex::new("^gpt-4").unwrap()).test("gpt-4o"));
        assert!(!TextMatch::Never.test(""));
    }
}
