//! `text.keywords` rules, searched without running the regex engine over the message text.
//!
//! A keyword list means the same as the regex alternation of the escaped keywords, matched
//! case-insensitively by default with Unicode simple case folding. For keywords made of ASCII
//! characters that search reduces to an ASCII case-insensitive substring search, which is what this
//! module does. Inside the VM, up to four keywords are looked for in one pass over the text, 16
//! bytes at a time, each by a pair of adjacent bytes around its rarest one ([`Scan`]); the keyword
//! is compared where its pair shows. Longer lists, and every list in a native build, look for each
//! keyword's rarest byte with `memchr2` in turn. Two things would make the reduction inexact, and
//! both fall back to the compiled regex:
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
    /// The one-pass search, when the keywords' pairs and the partner leads are few enough for it.
    scan: Option<Scan>,
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
    /// Where in the keyword the pair [`Scan`] looks for starts: at the anchor, or just before it
    /// when the anchor is the last byte.
    pair_at: usize,
    /// The two bytes there with bit `0x20` set (see [`Scan`]).
    pair: [u8; 2],
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
        let words: Vec<Word> = words.iter().map(|w| Word::new(w.as_bytes(), case_insensitive)).collect();
        let mut leads: Vec<u8> = partners.iter().filter_map(|c| c.encode_utf8(&mut [0; 4]).bytes().next()).collect();
        leads.sort_unstable();
        leads.dedup();
        let partner_leads = (leads.len() <= 2).then_some(leads);
        let scan = partner_leads.as_deref().and_then(|leads| Scan::new(&words, leads));
        let partners =
            partners.into_iter().map(|c| Finder::new(c.encode_utf8(&mut [0; 4]).as_bytes()).into_owned()).collect();
        Some(Keywords { words, partners, partner_leads, scan, regex })
    }

    /// Whether `text` contains one of the keywords.
    pub fn is_match(&self, text: &str) -> bool {
        match self.scan.as_ref().filter(|_| SCAN_RUNS) {
            Some(scan) => self.is_match_scanning(scan, text),
            None => self.is_match_word_by_word(text),
        }
    }

    /// [`Keywords::is_match`] with the one-pass scan, then the careful search if a partner's lead
    /// byte came first.
    fn is_match_scanning(&self, scan: &Scan, text: &str) -> bool {
        match scan.search(text.as_bytes(), &self.words) {
            Found::Keyword => true,
            Found::Nothing => false,
            Found::PartnerLead => self.is_match_word_by_word(text),
        }
    }

    /// [`Keywords::is_match`] one keyword at a time, after looking for fold partners.
    fn is_match_word_by_word(&self, text: &str) -> bool {
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
        let pair_at = if anchor.saturating_add(1) < bytes.len() { anchor } else { anchor.saturating_sub(1) };
        let folded = |i: usize| bytes.get(i).map_or(0, |b| b | 0x20);
        let pair = [folded(pair_at), folded(pair_at.saturating_add(1))];
        Word { bytes, anchor, needle, case_insensitive, pair_at, pair }
    }

    /// Whether the keyword starts at `start` in `text`; `None` when it would run past the end.
    fn starts_at(&self, text: &[u8], start: usize) -> Option<bool> {
        let candidate = text.get(start..start.checked_add(self.bytes.len())?)?;
        Some(if self.case_insensitive {
            candidate.eq_ignore_ascii_case(&self.bytes)
        } else {
            candidate == self.bytes.as_slice()
        })
    }

    /// Whether the keyword is in `text` with its pair at `at`.
    fn is_at(&self, text: &[u8], at: usize) -> bool {
        at.checked_sub(self.pair_at).and_then(|start| self.starts_at(text, start)) == Some(true)
    }

    fn is_in(&self, text: &[u8]) -> bool {
        let mut from = self.anchor;
        while let Some(hit) = text.get(from..).and_then(|rest| memchr2(self.needle.0, self.needle.1, rest)) {
            let at = from + hit;
            match self.starts_at(text, at - self.anchor) {
                Some(true) => return true,
                Some(false) => {}
                // The keyword would run past the end of the text: so would every later hit.
                None => return false,
            }
            from = at + 1;
        }
        false
    }
}

/// Whether [`Keywords::is_match`] uses the one-pass scan: inside the VM, with vector instructions.
/// Built for the machine running the tests (and the native benchmarks and fuzzing), the scan's
/// stand-in takes a byte at a time while memchr there has its own wide vector search, so the
/// keyword-by-keyword search runs instead; the tests check both.
const SCAN_RUNS: bool = cfg!(all(target_arch = "wasm32", target_feature = "simd128"));

/// What [`Scan::search`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Keyword,
    /// A byte that may start a fold partner, before any keyword: the text needs the careful search.
    PartnerLead,
    Nothing,
}

/// Up to four keywords and the partners' lead bytes, looked for in one pass over the text. The
/// text byte at `i` is a candidate when it equals a lead, or when it and the next byte equal a
/// keyword's pair once bit `0x20` is set in all four: for a letter that is its lower case, so both
/// cases of a letter are caught; other bytes that land on a pair byte that way only make extra
/// candidates, which the comparison rejects. A pair rather than one byte: in prose a keyword's
/// rarest letter alone still shows every few dozen bytes, and each candidate costs a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scan {
    /// The keywords' distinct pairs, the first repeated to fill the four slots.
    pairs: [[u8; 2]; 4],
    /// The partners' lead bytes, the rest of the slots `0xFF` (a byte UTF-8 text never has).
    leads: [u8; 2],
}

impl Scan {
    /// The scan for `words`, when they have at most four pairs between them (and every keyword
    /// has two bytes) and there are at most two lead bytes.
    fn new(words: &[Word], leads: &[u8]) -> Option<Self> {
        if words.iter().any(|w| w.bytes.len() < 2) || leads.len() > 2 {
            return None;
        }
        let mut pairs: Vec<[u8; 2]> = Vec::new();
        for word in words {
            if !pairs.contains(&word.pair) {
                pairs.push(word.pair);
            }
        }
        let first = *pairs.first()?;
        if pairs.len() > 4 {
            return None;
        }
        let mut scan = Scan { pairs: [first; 4], leads: [0xFF; 2] };
        scan.pairs.iter_mut().zip(&pairs).for_each(|(slot, pair)| *slot = *pair);
        scan.leads.iter_mut().zip(leads).for_each(|(slot, lead)| *slot = *lead);
        Some(scan)
    }

    /// Looks at each candidate in order: a keyword found there ends the search, and so does a
    /// partner's lead byte.
    fn search(&self, text: &[u8], words: &[Word]) -> Found {
        let masks = Masks::new(self);
        let mut base = 0usize;
        // Each block also reads the byte after it (the second of a pair starting at its end).
        while let Some(window) = text.get(base..base.saturating_add(65)).and_then(|w| <&[u8; 65]>::try_from(w).ok()) {
            if let Some(found) = self.check(text, words, base, masks.mask_64(window)) {
                return found;
            }
            base = base.saturating_add(64);
        }
        while let Some(window) = text.get(base..base.saturating_add(17)).and_then(|w| <&[u8; 17]>::try_from(w).ok()) {
            if let Some(found) = self.check(text, words, base, u64::from(masks.mask_16(window))) {
                return found;
            }
            base = base.saturating_add(16);
        }
        let tail = text.get(base..).unwrap_or_default();
        let mask = (0..tail.len()).fold(0u64, |m, i| m | (u64::from(self.is_candidate(tail, i)) << i));
        self.check(text, words, base, mask).unwrap_or(Found::Nothing)
    }

    /// The candidates in `mask` (bit `i` for `text[base + i]`), in order.
    #[inline(always)]
    fn check(&self, text: &[u8], words: &[Word], base: usize, mask: u64) -> Option<Found> {
        if mask == 0 {
            return None;
        }
        self.check_each(text, words, base, mask)
    }

    fn check_each(&self, text: &[u8], words: &[Word], base: usize, mut mask: u64) -> Option<Found> {
        while mask != 0 {
            let at = base.saturating_add(mask.trailing_zeros() as usize);
            mask &= mask.wrapping_sub(1);
            let folded = |i: usize| text.get(i).map_or(0, |b| b | 0x20);
            if text.get(at).is_some_and(|b| self.leads.contains(b)) {
                return Some(Found::PartnerLead);
            }
            let pair = [folded(at), folded(at.saturating_add(1))];
            if words.iter().any(|w| w.pair == pair && w.is_at(text, at)) {
                return Some(Found::Keyword);
            }
        }
        None
    }

    /// Whether `bytes[i]` is a candidate (a pair needs `bytes[i + 1]`).
    fn is_candidate(&self, bytes: &[u8], i: usize) -> bool {
        let Some(&byte) = bytes.get(i) else { return false };
        let next = bytes.get(i.saturating_add(1)).map(|b| b | 0x20);
        self.leads.contains(&byte) || next.is_some_and(|next| self.pairs.contains(&[byte | 0x20, next]))
    }
}

/// [`Scan`]'s candidate test over a block of text: a byte at a time.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
struct Masks<'a>(&'a Scan);

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
impl<'a> Masks<'a> {
    fn new(scan: &'a Scan) -> Self {
        Masks(scan)
    }

    /// The candidates among the first 16 of 17 bytes, bit `i` for `window[i]`.
    fn mask_16(&self, window: &[u8; 17]) -> u16 {
        (0..16).fold(0u16, |m, i| m | (u16::from(self.0.is_candidate(window, i)) << i))
    }

    /// The candidates among the first 64 of 65 bytes, bit `i` for `window[i]`.
    fn mask_64(&self, window: &[u8; 65]) -> u64 {
        (0..64).fold(0u64, |m, i| m | (u64::from(self.0.is_candidate(window, i)) << i))
    }
}

/// [`Scan`]'s candidate test over a block of text: 16 bytes at a time, with the scan's bytes
/// spread over vectors once per search.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
struct Masks {
    fold: core::arch::wasm32::v128,
    firsts: [core::arch::wasm32::v128; 4],
    seconds: [core::arch::wasm32::v128; 4],
    leads: [core::arch::wasm32::v128; 2],
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
impl Masks {
    fn new(scan: &Scan) -> Self {
        use core::arch::wasm32::u8x16_splat as splat;
        Masks {
            fold: splat(0x20),
            firsts: scan.pairs.map(|[a, _]| splat(a)),
            seconds: scan.pairs.map(|[_, b]| splat(b)),
            leads: scan.leads.map(|l| splat(l)),
        }
    }

    /// The candidates among the first 16 of 17 bytes, bit `i` for `window[i]`.
    fn mask_16(&self, window: &[u8; 17]) -> u16 {
        core::arch::wasm32::u8x16_bitmask(self.candidates(window, 0))
    }

    /// The candidates among the first 64 of 65 bytes, bit `i` for `window[i]`: one test for "no
    /// candidate", which is most blocks, before the four masks are gathered.
    fn mask_64(&self, window: &[u8; 65]) -> u64 {
        use core::arch::wasm32::{u8x16_bitmask, v128_any_true, v128_or};
        let c = [0, 16, 32, 48].map(|at| self.candidates(window, at));
        if !v128_any_true(v128_or(v128_or(c[0], c[1]), v128_or(c[2], c[3]))) {
            return 0;
        }
        c.iter().rev().fold(0u64, |m, v| (m << 16) | u64::from(u8x16_bitmask(*v)))
    }

    /// 0xFF in each of the 16 lanes from `window[at]` that holds a candidate (zero past the end
    /// of `window`, which callers keep 17 bytes long from `at`).
    #[inline(always)]
    fn candidates(&self, window: &[u8], at: usize) -> core::arch::wasm32::v128 {
        use core::arch::wasm32::{u8x16, u8x16_eq as eq, v128, v128_and as and, v128_or as or};
        let load = |from: usize| -> v128 {
            let bytes = window.get(from..from.saturating_add(16)).and_then(|b| <&[u8; 16]>::try_from(b).ok());
            let [b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15] =
                bytes.copied().unwrap_or([0; 16]);
            u8x16(b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15)
        };
        let here = load(at);
        let (first, second) = (or(here, self.fold), or(load(at.saturating_add(1)), self.fold));
        let [f0, f1, f2, f3] = self.firsts;
        let [s0, s1, s2, s3] = self.seconds;
        let pairs = or(
            or(and(eq(first, f0), eq(second, s0)), and(eq(first, f1), eq(second, s1))),
            or(and(eq(first, f2), eq(second, s2)), and(eq(first, f3), eq(second, s3))),
        );
        let [l0, l1] = self.leads;
        or(pairs, or(eq(here, l0), eq(here, l1)))
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
    use crate::testing::xorshift;
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
                let want = re.is_match(text);
                let case = format!("{words:?} in {text:?} (ignore case: {case_insensitive})");
                assert_eq!(fast.is_match(text), want, "{case}");
                assert_eq!(fast.is_match_word_by_word(text), want, "keyword by keyword: {case}");
                if let Some(scan) = &fast.scan {
                    assert_eq!(fast.is_match_scanning(scan, text), want, "one pass: {case}");
                }
            }
        }
    }

    /// [`agree`] on generated texts; how many of them have a keyword (ignoring case), so that a
    /// test can check its texts test both outcomes.
    fn agree_counting(words: &[&str], texts: &[String]) -> usize {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        agree(words, &refs);
        let re = regex(words, true);
        refs.iter().filter(|t| re.is_match(t)).count()
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
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let mut texts = Vec::new();
        for _ in 0..3000 {
            let seed = next();
            let len = (seed % 9) as usize;
            let text: String = (0..len)
                .map(|i| alphabet.get(((seed >> (i * 5 + 8)) % alphabet.len() as u64) as usize).copied().unwrap_or('x'))
                .collect();
            texts.push(text);
        }
        let matched = agree_counting(&words, &texts);
        assert!(matched > 300 && matched < 2700, "{matched} of 3000 match: the texts test too little");
    }

    /// Texts long enough for every part of the one-pass scan (64-byte blocks, 16-byte blocks, the
    /// tail), each with a keyword or a near miss at a random place, often across a block's end.
    #[test]
    fn agrees_with_the_regex_on_long_generated_texts() {
        let words = ["fraud", "stolen card", "chargeback", "ok"];
        let pieces = [
            "fraud",
            "FrAuD",
            "frau",
            "stolen card",
            "STOLEN CARD",
            "stolen  card",
            "chargeback",
            "chargebac",
            "OK",
            "o",
            "\u{212a}",
            "\u{17f}tolen card",
            "é",
            "€",
            ".",
            "\n",
        ];
        let filler = b"the quarterly report lists revenue by region; ";
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut texts = Vec::new();
        for _ in 0..4000 {
            let len = (next() % 200) as usize;
            let mut text: String = (0..len).map(|i| char::from(filler[i % filler.len()])).collect();
            let piece = pieces[(next() % pieces.len() as u64) as usize];
            let at = (next() as usize % (len + 1)).min(len);
            text.insert_str(at, piece);
            texts.push(text);
        }
        let matched = agree_counting(&words, &texts);
        assert!(matched > 1000 && matched < 3000, "{matched} of 4000 match: the texts test too little");
        assert!(keywords(&words, true).unwrap().scan.is_some(), "these keywords are searched in one pass");
    }

    #[test]
    fn the_one_pass_scan_takes_up_to_four_pairs_of_two_bytes() {
        assert!(keywords(&["fraud", "stolen card", "chargeback", "ok"], true).unwrap().scan.is_some());
        // "fraud" and "fraudster" share their pair ("fr"): four pairs in all.
        assert!(keywords(&["fraud", "fraudster", "stolen card", "chargeback", "ok"], false).unwrap().scan.is_some());
        assert!(keywords(&["fraud", "stolen card", "chargeback", "ok", "xy"], true).unwrap().scan.is_none());
        assert!(keywords(&["fraud", "x"], true).unwrap().scan.is_none(), "a one-byte keyword has no pair");
        let word = Word::new(b"chargeback", true);
        assert_eq!((word.pair_at, word.pair), (8, *b"ck"), "the pair ends at an anchor that ends the word");
        assert_eq!(Word::new(b"Fraud", false).pair, *b"fr", "pairs are compared with bit 0x20 set");
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
