//! What an answer cost, exactly.
//!
//! Prices are whole nano-dollars per million tokens (`config::UsdPerMillion`) and token counts are
//! whole numbers, so a cost is their product in femto-dollars (1e-15 USD): exact, in a `u128` that
//! no `u64` count times a `u64` price can overflow. No floating point is involved, so costs summed
//! over millions of answers do not drift, and the decimal string shown to clients is exactly the
//! price book's arithmetic.
//!
//! Billing rules:
//! - Cached input tokens are part of `input` (OpenAI's convention). They are billed at the
//!   `cached_input` price when the model has one, else at the input price; the rest of `input` at
//!   the input price.
//! - Reasoning tokens are part of `output`. They are billed at the `reasoning` price when the model
//!   has one, else at the output price; the rest of `output` at the output price.
//! - An upstream that reports more cached tokens than input tokens, or more reasoning tokens than
//!   output tokens, is taken to mean all of them: the part is clamped to the whole, never
//!   subtracted below zero.
//! - A model needs an input price to be priced at all. It needs an output price only when the
//!   answer has output tokens, so embeddings are priced with an input price alone.
//!
//! This module decides the amount. Where it is shown (headers, the final chunk, metrics, the access
//! log) and what an unpriced answer looks like are the caller's decisions.

use std::fmt;

use crate::config::{Price, UsdPerMillion};
use crate::text::{push_decimal, push_digits};
use crate::usage::Usage;

/// Femto-dollars in one USD.
const FEMTOS_PER_USD: u128 = 1_000_000_000_000_000;
/// Femto-dollars in one nano-dollar.
const FEMTOS_PER_NANO: u128 = 1_000_000;
/// Decimal places of a femto-dollar amount.
const FRACTION_DIGITS: usize = 15;

/// A cost in femto-dollars (1e-15 USD): exact for any token count times a price in nano-dollars
/// per million tokens.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cost(u128);

impl Cost {
    pub const ZERO: Cost = Cost(0);

    pub const fn from_femtos(femtos: u128) -> Cost {
        Cost(femtos)
    }

    /// The cost in femto-dollars (1e-15 USD).
    pub const fn femtos(self) -> u128 {
        self.0
    }

    /// The cost in nano-dollars (1e-9 USD), rounded half up and saturating at `u64::MAX`: a unit
    /// that fits an integer counter.
    pub fn nanos_rounded(self) -> u64 {
        let nanos = self.0.saturating_add(FEMTOS_PER_NANO / 2) / FEMTOS_PER_NANO;
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// The sum, saturating at the largest representable cost.
    #[must_use]
    pub const fn saturating_add(self, other: Cost) -> Cost {
        Cost(self.0.saturating_add(other.0))
    }

    /// Appends the cost as decimal USD with no exponent and no trailing zeros: `0`, `0.000345`,
    /// `12.5`, `0.000000000000001` (what [`Display`](fmt::Display) shows), without the formatting
    /// machinery: the hot path writes one per answer.
    pub fn push_text(self, out: &mut String) {
        let per_usd = FEMTOS_PER_USD as u64;
        // Costs below 18,446 USD fit in 64 bits, whose division is one instruction in wasm (128-bit
        // division is a library call). The fraction is below 10^15 either way.
        let mut fraction = match u64::try_from(self.0) {
            Ok(small) => {
                push_decimal(out, small / per_usd);
                small % per_usd
            }
            Err(_) => {
                let whole = self.0 / FEMTOS_PER_USD;
                // Above u64::MAX whole dollars (a saturated sum): the rare wide case.
                match u64::try_from(whole) {
                    Ok(whole) => push_decimal(out, whole),
                    Err(_) => out.push_str(&whole.to_string()),
                }
                (self.0 % FEMTOS_PER_USD) as u64
            }
        };
        if fraction == 0 {
            return;
        }
        let mut digits = FRACTION_DIGITS;
        while fraction.is_multiple_of(10) {
            fraction /= 10;
            digits = digits.saturating_sub(1);
        }
        out.push('.');
        push_digits(out, fraction, digits);
    }

    /// [`Cost::push_text`] into a new string.
    pub fn text(self) -> String {
        let mut out = String::with_capacity(24);
        self.push_text(&mut out);
        out
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;

    /// Saturating, like `saturating_add`.
    fn add(self, other: Cost) -> Cost {
        self.saturating_add(other)
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::ZERO, Cost::saturating_add)
    }
}

/// Decimal USD with no exponent and no trailing zeros ([`Cost::push_text`]).
impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Why an answer has no cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unpriced {
    #[error("the model has no input price")]
    NoInputPrice,
    #[error("the model has no output price and the answer has output tokens")]
    NoOutputPrice,
}

/// Prices an answer by the rules in the module documentation.
pub fn price(usage: &Usage, price: &Price) -> Result<Cost, Unpriced> {
    let input_price = price.input.ok_or(Unpriced::NoInputPrice)?;
    let cached = usage.cached_input.min(usage.input);
    let uncached = usage.input.saturating_sub(cached);
    let input = femtos(uncached, input_price).saturating_add(femtos(cached, price.cached_input.unwrap_or(input_price)));

    let output = if usage.output == 0 {
        0
    } else {
        let output_price = price.output.ok_or(Unpriced::NoOutputPrice)?;
        let reasoning = usage.reasoning.min(usage.output);
        let visible = usage.output.saturating_sub(reasoning);
        femtos(visible, output_price).saturating_add(femtos(reasoning, price.reasoning.unwrap_or(output_price)))
    };
    Ok(Cost(input.saturating_add(output)))
}

/// Tokens times nano-dollars per million tokens is femto-dollars; (2^64 - 1)^2 fits in a u128.
fn femtos(tokens: u64, price: UsdPerMillion) -> u128 {
    u128::from(tokens).saturating_mul(u128::from(price.nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_value;
    use serde_json::{json, Value};

    /// Real `Price`s, compiled from a small configuration: `prices` is the model's price fields.
    fn price_of(prices: Value) -> Price {
        let config = from_value(json!({
            "upstreams": {"a": {"cluster": "a"}},
            "models": {"m": prices},
            "categories": [{"name": "all", "candidates": [{"upstream": "a", "model": "m"}]}],
            "default_category": "all"
        }))
        .unwrap();
        config.models[0].price
    }

    fn usage(input: u64, output: u64, cached_input: u64, reasoning: u64) -> Usage {
        Usage { input, output, cached_input, reasoning }
    }

    fn usd(usage: Usage, prices: Value) -> String {
        price(&usage, &price_of(prices)).unwrap().to_string()
    }

    #[test]
    fn hand_computed_examples() {
        let mini = json!({"input_usd_per_1m": 0.15, "output_usd_per_1m": 0.6});
        // 1000 × 0.15 / 1e6 = 0.00015; 500 × 0.60 / 1e6 = 0.0003.
        assert_eq!(usd(usage(1000, 500, 0, 0), mini.clone()), "0.00045");
        assert_eq!(price(&usage(1000, 500, 0, 0), &price_of(mini.clone())).unwrap().femtos(), 450_000_000_000);
        // 19 × 0.15 + 10 × 0.6 = 2.85 + 6 = 8.85 micro-dollars.
        assert_eq!(usd(usage(19, 10, 0, 0), mini.clone()), "0.00000885");
        assert_eq!(usd(usage(0, 0, 0, 0), mini), "0");
        let large = json!({"input_usd_per_1m": 2.5, "output_usd_per_1m": 10});
        assert_eq!(usd(usage(1_000_000, 1_000_000, 0, 0), large), "12.5");
    }

    #[test]
    fn cached_input_split() {
        let prices = json!({"input_usd_per_1m": 0.15, "output_usd_per_1m": 0.6, "cached_input_usd_per_1m": 0.075});
        // 2006 input of which 1920 cached: 86 × 0.15 + 1920 × 0.075 = 12.9 + 144 = 156.9 micro-dollars;
        // 300 output × 0.6 = 180.
        assert_eq!(usd(usage(2006, 300, 1920, 0), prices.clone()), "0.0003369");
        // Without a cached price, cached tokens are billed as input.
        let plain = json!({"input_usd_per_1m": 0.15, "output_usd_per_1m": 0.6});
        assert_eq!(usd(usage(2006, 300, 1920, 0), plain), "0.0004809");
        // More cached than input (bad data): all input is cached, nothing underflows.
        assert_eq!(usd(usage(100, 0, 500, 0), prices), "0.0000075");
    }

    #[test]
    fn reasoning_split() {
        let prices = json!({"input_usd_per_1m": 1.1, "output_usd_per_1m": 4.4, "reasoning_usd_per_1m": 8});
        // 1000 × 1.1 = 1100; 1300 output of which 1024 reasoning: 276 × 4.4 + 1024 × 8 = 1214.4 + 8192.
        assert_eq!(usd(usage(1000, 1300, 0, 1024), prices.clone()), "0.0105064");
        // Without a reasoning price, reasoning tokens are billed as output: 1100 + 1300 × 4.4 = 6820.
        let plain = json!({"input_usd_per_1m": 1.1, "output_usd_per_1m": 4.4});
        assert_eq!(usd(usage(1000, 1300, 0, 1024), plain), "0.00682");
        // More reasoning than output (bad data): all output is reasoning.
        assert_eq!(usd(usage(0, 10, 0, 99), prices), "0.00008");
    }

    #[test]
    fn missing_prices() {
        let only_input = price_of(json!({"input_usd_per_1m": 0.02}));
        assert_eq!(price(&usage(8, 0, 0, 0), &only_input).unwrap().to_string(), "0.00000016", "embeddings");
        assert_eq!(price(&usage(8, 1, 0, 0), &only_input), Err(Unpriced::NoOutputPrice));
        let only_output = price_of(json!({"output_usd_per_1m": 0.6}));
        assert_eq!(price(&usage(8, 1, 0, 0), &only_output), Err(Unpriced::NoInputPrice));
        assert_eq!(price(&usage(0, 0, 0, 0), &Price::default()), Err(Unpriced::NoInputPrice));
        // A reasoning price does not stand in for a missing output price.
        let no_output = price_of(json!({"input_usd_per_1m": 1, "reasoning_usd_per_1m": 8}));
        assert_eq!(price(&usage(1, 5, 0, 5), &no_output), Err(Unpriced::NoOutputPrice));
        assert_eq!(Unpriced::NoInputPrice.to_string(), "the model has no input price");
    }

    #[test]
    fn huge_counts_do_not_drift() {
        // 10^12 tokens at 0.075 USD per 1M is 75 000 USD, exactly; one more token adds 75 nano-dollars.
        let prices = json!({"input_usd_per_1m": 0.075, "output_usd_per_1m": 0.3});
        assert_eq!(usd(usage(1_000_000_000_000, 0, 0, 0), prices.clone()), "75000");
        assert_eq!(usd(usage(1_000_000_000_001, 0, 0, 0), prices.clone()), "75000.000000075");
        assert_eq!(usd(usage(1_000_000_000_001, 3, 0, 0), prices), "75000.000000975");
        // The largest counts at the largest price a config accepts (100 000 USD per 1M).
        let max = json!({"input_usd_per_1m": 100_000, "output_usd_per_1m": 100_000});
        let cost = price(&usage(u64::MAX, u64::MAX, 0, 0), &price_of(max)).unwrap();
        assert_eq!(cost.femtos(), 2 * u128::from(u64::MAX) * 100_000_000_000_000);
        assert_eq!(cost.to_string(), "3689348814741910323");
    }

    #[test]
    fn display() {
        let cases: &[(u128, &str)] = &[
            (0, "0"),
            (1, "0.000000000000001"),
            (10, "0.00000000000001"),
            (345_000_000_000, "0.000345"),
            (1_000_000_000_000_000, "1"),
            (12_500_000_000_000_000, "12.5"),
            (1_000_000_000_000_001, "1.000000000000001"),
            (999_999_999_999_999, "0.999999999999999"),
            // The last cost with 64-bit arithmetic and the first without.
            (u128::from(u64::MAX), "18446.744073709551615"),
            (u128::from(u64::MAX) + 1, "18446.744073709551616"),
            (u128::MAX, "340282366920938463463374.607431768211455"),
        ];
        for &(femtos, want) in cases {
            assert_eq!(Cost::from_femtos(femtos).to_string(), want, "{femtos}");
        }
    }

    #[test]
    fn nanos_round_half_up_and_saturate() {
        assert_eq!(Cost::from_femtos(0).nanos_rounded(), 0);
        assert_eq!(Cost::from_femtos(499_999).nanos_rounded(), 0);
        assert_eq!(Cost::from_femtos(500_000).nanos_rounded(), 1);
        assert_eq!(Cost::from_femtos(1_499_999).nanos_rounded(), 1);
        assert_eq!(Cost::from_femtos(1_500_000).nanos_rounded(), 2);
        assert_eq!(Cost::from_femtos(450_000_000_000).nanos_rounded(), 450_000);
        assert_eq!(Cost::from_femtos(u128::MAX).nanos_rounded(), u64::MAX);
        assert_eq!(Cost::from_femtos(u128::from(u64::MAX) * 1_000_000).nanos_rounded(), u64::MAX);
    }

    #[test]
    fn addition_saturates() {
        let a = Cost::from_femtos(7);
        assert_eq!(a.saturating_add(Cost::from_femtos(3)).femtos(), 10);
        assert_eq!((a + a).femtos(), 14);
        assert_eq!(Cost::from_femtos(u128::MAX).saturating_add(a), Cost::from_femtos(u128::MAX));
        assert_eq!(Cost::from_femtos(u128::MAX) + a, Cost::from_femtos(u128::MAX));
        assert_eq!([a, a, a].into_iter().sum::<Cost>().femtos(), 21);
        assert!(Cost::from_femtos(1) > Cost::ZERO);
    }
}
