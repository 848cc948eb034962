//! `text.keywords` rules, searched without running the regex engine over the message text.
//!
//! A keyword list means the same as the regex alternation of the escaped keywords, matched
//! case-insensitively by default with Unicode simple case folding. For keywords made of ASCII
//! characters that search reduces to an ASCII case-insensitive substring search, which is what this
//! module does: for each keyword it looks for its rarest byte (in both cases) with `memchr2`, then
//! compares the keyword around each hit. Two things would make the reduction inexact, and both
//! fall back to the compiled regex:
//! - a keyword with a non-ASCII character (its case partners are not just upper and lower case):
//!   the whole list is searched by the regex;
//! - a message text containing a non-ASCII character that folds to a keyword's ASCII letter (the
//!   Kelvin sign `K` folds to `k`, the long s `ſ` to `s`): that text is searched by the regex.

use memchr::memchr2;
use memchr::memmem::Finder;
use regex::Regex;
use regex_syntax::hir::{ClassUnicode, ClassUnicodeRange};

/// A compiled keyword list.
#[derive(Debug)]
pub struct Keywords {
    words: Vec<Word>,
    /// Non-ASCII characters that fold to a keyword's letter; a text containing one goes to `regex`.
    partners: Vec<Finder<'static>>,
    /// The first bytes of the partners' UTF-8 encodings, when there are at most two (as for the
    /// ASCII letters: `K` and `ſ`): a text without any of them, found in one vector scan, has no
    /// partner, and is not searched for each.
    partner_leads: Option<Vec<u8>>,
    /// The alternation of the keywords, for the texts above.
    regex: Regex,
}

#[derive(Debug)]
struct Word {
    /// The keyword, lower-cased when the search ignores case.
    bytes: Vec<u8>,
    /// Where in the keyword the byte searched for first is.
    anchor: usize,
    /// That byte in lower and upper case (the same byte twice when case matters).
    needle: (u8, u8),
    case_insensitive: bool,
}

impl Keywords {
    /// The fast search for `words`, or `None` when a keyword is not ASCII (the regex alone then
    /// searches). `regex` must be the alternation of the escaped `words`, compiled with the same
    /// case sensitivity.
    pub fn new(words: &[String], case_insensitive: bool, regex: Regex) -> Option<Self> {
        if words.iter().any(|w| w.is_empty() || !w.is_ascii()) {
            return None;
        }
        let mut partners: Vec<char> = Vec::new();
        if case_insensitive {
            for c in words.iter().flat_map(|w| w.chars()).filter(char::is_ascii_alphabetic) {
                let mut class = ClassUnicode::new([ClassUnicodeRange::new(c, c)]);
                class.case_fold_simple();
                let folded = class.iter().flat_map(|r| r.start()..=r.end());
                partners.extend(folded.filter(|p| !p.is_ascii()));
            }
            partners.sort_unstable();
            partners.dedup();
        }
        let words = words.iter().map(|w| Word::new(w.as_bytes(), case_insensitive)).collect();
        let mut leads: Vec<u8> = partners.iter().filter_map(|c| c.encode_utf8(&mut [0; 4]).bytes().next()).collect();
        leads.sort_unstable();
        leads.dedup();
        let partner_leads = (leads.len() <= 2).then_some(leads);
        let partners =
            partners.into_iter().map(|c| Finder::new(c.encode_utf8(&mut [0; 4]).as_bytes()).into_owned()).collect();
        Some(Keywords { words, partners, partner_leads, regex })
    }

    /// Whether `text` contains one of the keywords.
    pub fn is_match(&self, text: &str) -> bool {
        let bytes = text.as_bytes();
        let may_have_partner = match self.partner_leads.as_deref() {
            Some([]) => false,
            Some([a]) => memchr2(*a, *a, bytes).is_some(),
            Some([a, b]) => memchr2(*a, *b, bytes).is_some(),
            _ => true,
        };
        if may_have_partner && self.partners.iter().any(|p| p.find(bytes).is_some()) {
            return self.regex.is_match(text);
        }
        self.words.iter().any(|w| w.is_in(bytes))
    }
}

impl Word {
    fn new(word: &[u8], case_insensitive: bool) -> Self {
        let bytes: Vec<u8> = if case_insensitive { word.to_ascii_lowercase() } else { word.to_vec() };
        let anchor = (0..bytes.len()).min_by_key(|i| bytes.get(*i).map_or(u8::MAX, |b| rank(*b))).unwrap_or(0);
        let byte = bytes.get(anchor).copied().unwrap_or(0);
        let needle = if case_insensitive { (byte, byte.to_ascii_uppercase()) } else { (byte, byte) };
        Word { bytes, anchor, needle, case_insensitive }
    }

    fn is_in(&self, text: &[u8]) -> bool {
        let mut from = self.anchor;
        while let Some(hit) = text.get(from..).and_then(|rest| memchr2(self.needle.0, self.needle.1, rest)) {
            let at = from + hit;
            let start = at - self.anchor;
            if let Some(candidate) = text.get(start..start + self.bytes.len()) {
                let same = if self.case_insensitive {
                    candidate.eq_ignore_ascii_case(&self.bytes)
                } else {
                    candidate == self.bytes.as_slice()
                };
                if same {
                    return true;
                }
            } else {
                // The keyword would run past the end of the text: so would every later hit.
                return false;
            }
            from = at + 1;
        }
        false
    }
}

/// How common a byte is in prose (lower is rarer): the byte searched for first is the rarest
/// of the keyword, so that the search stops less often to compare.
fn rank(byte: u8) -> u8 {
    const LETTERS_BY_FREQUENCY: &[u8] = b"etaoinshrdlcumwfgypbvkjxqz";
    match byte.to_ascii_lowercase() {
        b' ' => 255,
        b if b.is_ascii_lowercase() => {
            let position = LETTERS_BY_FREQUENCY.iter().position(|l| *l == b).unwrap_or(0);
            // `e` ranks highest (254), `z` lowest (229).
            254 - u8::try_from(position).unwrap_or(0)
        }
        b'.' | b',' | b'\n' => 200,
        b if b.is_ascii_digit() => 100,
        _ => 50,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::RegexBuilder;

    fn regex(words: &[&str], case_insensitive: bool) -> Regex {
        let alternation = words.iter().map(|w| regex::escape(w)).collect::<Vec<_>>().join("|");
        RegexBuilder::new(&alternation).case_insensitive(case_insensitive).build().unwrap()
    }

    fn keywords(words: &[&str], case_insensitive: bool) -> Option<Keywords> {
        let owned: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
        Keywords::new(&owned, case_insensitive, regex(words, case_insensitive))
    }

    /// The fast search and the regex agree on every text, both ways of case.
    fn agree(words: &[&str], texts: &[&str]) {
        for case_insensitive in [true, false] {
            let fast = keywords(words, case_insensitive).unwrap();
            let re = regex(words, case_insensitive);
            for text in texts {
                assert_eq!(
                    fast.is_match(text),
                    re.is_match(text),
                    "{words:?} in {text:?} (ignore case: {case_insensitive})"
                );
            }
        }
    }

    #[test]
    fn matches_like_the_regex_alternation() {
        let words = ["chargeback", "fraud", "stolen card"];
        agree(
            &words,
            &[
                "",
                "fraud",
                "FRAUD at the start",
                "a Chargeback",
                "ends with fraU",
                "frau",
                "a STOLEN Card, reported",
                "stolen  card",
                "stolencard",
                "Fraude bancaire: é à ü",
                "naïve fraud after non-ASCII",
                "chargebac",
                "xchargebackx",
                "ƒraud with a hooked f",
            ],
        );
    }

    #[test]
    fn characters_that_fold_to_ascii_letters_go_to_the_regex() {
        // U+212A KELVIN SIGN folds to `k`, U+017F LATIN SMALL LETTER LONG S to `s`.
        let words = ["chargeback", "stolen card"];
        agree(&words, &["chargebac\u{212a}", "\u{17f}tolen card", "\u{17f}tolen", "charge\u{212a}ack", "back"]);
        // Other characters sharing a partner's first byte (U+0150, U+2122) or not (é).
        agree(&words, &["\u{150} chargeback", "\u{2122} \u{17f}tolen card", "é charge\u{212a}ack", "\u{150}\u{2122}é"]);
        let fast = keywords(&words, true).unwrap();
        assert!(fast.is_match("chargebac\u{212a}"));
        assert_eq!(fast.partners.len(), 2);
        assert_eq!(fast.partner_leads.as_deref(), Some(&[0xC5, 0xE2][..]));
        assert!(keywords(&["fraud"], true).unwrap().partners.is_empty());
        assert!(keywords(&["stolen"], false).unwrap().partners.is_empty());
    }

    #[test]
    fn punctuation_digits_and_repeats() {
        agree(&["a.b", "x+y", "404", "aa"], &["a.b", "axb", "x+y", "xxy", "error 404!", "40", "a", "ba", "aa", "AAA"]);
        agree(&["ab"], &["aab", "aaab", "ba", "b"]);
    }

    #[test]
    fn agrees_with_the_regex_on_generated_texts() {
        // Texts drawn from the keywords' letters in both cases, their Unicode fold partners and
        // other characters, so that near misses and matches are both common.
        let alphabet: Vec<char> = "stkKSTacrdA \u{212a}\u{17f}é.".chars().collect();
        let words = ["st", "tack", "a c", "kk"];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut texts = Vec::new();
        for _ in 0..3000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 9) as usize;
            let text: String = (0..len)
                .map(|i| alphabet.get(((seed >> (i * 5 + 8)) % alphabet.len() as u64) as usize).copied().unwrap_or('x'))
                .collect();
            texts.push(text);
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        agree(&words, &refs);
        let re = regex(&words, true);
        let matched = refs.iter().filter(|t| re.is_match(t)).count();
        assert!(matched > 300 && matched < 2700, "{matched} of 3000 match: the texts test too little");
    }

    #[test]
    fn keywords_that_are_not_ascii_are_left_to_the_regex() {
        assert!(keywords(&["fraude", "mošt"], true).is_none());
        assert!(keywords(&["ok"], true).is_some());
    }

    #[test]
    fn the_rarest_letter_is_searched_first() {
        let word = Word::new(b"fraud", true);
        assert_eq!(word.needle, (b'f', b'F'));
        let word = Word::new(b"stolen card", false);
        assert_eq!(word.needle.0, b'c');
    }
}
