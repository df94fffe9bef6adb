//! Money as integer minor units plus an ISO 4217 currency: never floats, so
//! 19.99 is exactly 1999 and totals never drift.

use serde::{Deserialize, Serialize};

/// ISO 4217 codes mart accepts, lower-case as Stripe writes them, with the number
/// of minor-unit digits each uses (JPY has none, so 500 means ¥500).
const CURRENCIES: &[(&str, u8)] = &[
    ("aud", 2),
    ("brl", 2),
    ("cad", 2),
    ("chf", 2),
    ("cny", 2),
    ("czk", 2),
    ("dkk", 2),
    ("eur", 2),
    ("gbp", 2),
    ("hkd", 2),
    ("huf", 2),
    ("inr", 2),
    ("jpy", 0),
    ("krw", 0),
    ("mxn", 2),
    ("nok", 2),
    ("nzd", 2),
    ("pkr", 2),
    ("pln", 2),
    ("sek", 2),
    ("sgd", 2),
    ("usd", 2),
    ("zar", 2),
];

/// A currency mart knows, stored and sent as its lower-case ISO 4217 code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[schema(value_type = String, example = "usd")]
pub struct Currency(&'static str);

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        code.parse().map_err(serde::de::Error::custom)
    }
}

impl Currency {
    /// US dollars, the default currency of the catalog.
    pub const USD: Currency = Currency("usd");

    /// The lower-case ISO code.
    pub fn code(self) -> &'static str {
        self.0
    }

    /// How many digits of the amount are minor units.
    pub fn exponent(self) -> u8 {
        CURRENCIES
            .iter()
            .find(|(code, _)| *code == self.0)
            .map_or(2, |(_, digits)| *digits)
    }
}

/// The code was not an ISO 4217 currency mart accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown currency {0:?}: use a lower-case ISO 4217 code such as \"usd\"")]
pub struct UnknownCurrency(pub String);

impl std::str::FromStr for Currency {
    type Err = UnknownCurrency;
    fn from_str(code: &str) -> Result<Self, Self::Err> {
        CURRENCIES
            .iter()
            .find(|(known, _)| *known == code)
            .map(|(known, _)| Currency(known))
            .ok_or_else(|| UnknownCurrency(code.to_owned()))
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// An amount in minor units of a currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Money {
    /// Minor units (cents for USD): 1999 is 19.99.
    pub amount: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: i64, currency: Currency) -> Self {
        Self { amount, currency }
    }
}

impl std::fmt::Display for Money {
    /// `19.99 USD`: what a person reads in an email.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = self.currency.code().to_uppercase();
        let digits = u32::from(self.currency.exponent());
        if digits == 0 {
            return write!(f, "{} {code}", self.amount);
        }
        let scale = 10i64.pow(digits);
        let sign = if self.amount < 0 { "-" } else { "" };
        let abs = self.amount.unsigned_abs();
        let scale = scale.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:0width$} {code}",
            abs / scale,
            abs % scale,
            width = digits as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_print_with_the_currencys_minor_digits() {
        assert_eq!(Money::new(1999, Currency::USD).to_string(), "19.99 USD");
        assert_eq!(Money::new(5, Currency::USD).to_string(), "0.05 USD");
        assert_eq!(Money::new(-250, Currency::USD).to_string(), "-2.50 USD");
        let yen: Currency = "jpy".parse().expect("jpy is known");
        assert_eq!(Money::new(500, yen).to_string(), "500 JPY");
    }

    #[test]
    fn unknown_or_upper_case_codes_are_refused() {
        assert!("xyz".parse::<Currency>().is_err());
        assert!("USD".parse::<Currency>().is_err());
        let parsed: Result<Currency, _> = serde_json::from_str("\"eur\"");
        assert_eq!(parsed.expect("eur").code(), "eur");
    }
}
