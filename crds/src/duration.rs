//! Durations as written in the API: `100ms`, `2s`, `1m30s`, `3h`.

use std::time::Duration;

/// Regex for the OpenAPI schema, kept in step with [`parse`].
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid duration {input:?}: expected digits followed by ms, s, m or h (e.g. 100ms, 2s, 1m30s)"
)]
pub struct ParseDurationError {
    pub input: String,
}

/// Parses a duration made of one or more `<digits><unit>` groups.
pub fn parse(input: &str) -> Result<Duration, ParseDurationError> {
    let err = || ParseDurationError {
        input: input.to_string(),
    };
    let bytes = input.as_bytes();
    if bytes.is_empty() {
        return Err(err());
    }
    let mut total_ms: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(err());
        }
        let value: u64 = input[start..i].parse().map_err(|_| err())?;
        let unit_ms = if input[i..].starts_with("ms") {
            i += 2;
            1
        } else if input[i..].starts_with('s') {
            i += 1;
            1_000
        } else if input[i..].starts_with('m') {
            i += 1;
            60_000
        } else if input[i..].starts_with('h') {
            i += 1;
            3_600_000
        } else {
            return Err(err());
        };
        total_ms = value
            .checked_mul(unit_ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(err)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats milliseconds the way the API writes them (used in status and examples).
pub fn format_ms(ms: u64) -> String {
    if ms != 0 && ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms != 0 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms != 0 && ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums_groups() {
        let cases = [
            ("100ms", 100),
            ("2s", 2_000),
            ("1m30s", 90_000),
            ("3h", 10_800_000),
            ("10800s", 10_800_000),
            ("0s", 0),
            ("1h1m1s1ms", 3_661_001),
        ];
        for (text, ms) in cases {
            assert_eq!(parse(text), Ok(Duration::from_millis(ms)), "{text}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for text in [
            "",
            "5",
            "s",
            "1.5s",
            "-1s",
            "2 s",
            "2sec",
            "1d",
            "99999999999999999999h",
        ] {
            assert!(parse(text).is_err(), "{text} should be rejected");
        }
    }

    #[test]
    fn format_round_trips() {
        for ms in [0, 1, 100, 1_000, 60_000, 90_000, 3_600_000] {
            assert_eq!(parse(&format_ms(ms)).map(|d| d.as_millis() as u64), Ok(ms));
        }
    }
}
