//! Parsing of the sizes (`64MiB`, `1GB`, `4096`) and durations (`10s`, `500ms`, `2m`) the
//! command line takes. Invariant: a parsed value is exact; overflow and unknown units are
//! errors, never silently rounded.

use std::time::Duration;

use anyhow::{bail, Context};

/// Parses a byte count: a whole number with an optional unit, binary (`KiB`, `MiB`, `GiB`)
/// or decimal (`KB`, `MB`, `GB`), or `B`.
pub fn parse_bytes(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number
        .parse()
        .with_context(|| format!("size {text:?}: no number"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => bail!("size {text:?}: unknown unit {other:?}"),
    };
    number
        .checked_mul(multiplier)
        .with_context(|| format!("size {text:?} overflows"))
}

/// Parses a duration: a whole number followed by `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number
        .parse()
        .with_context(|| format!("duration {text:?}: no number"))?;
    let millis_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "s" | "" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => bail!("duration {text:?}: unknown unit {other:?}"),
    };
    let millis = number
        .checked_mul(millis_per_unit)
        .with_context(|| format!("duration {text:?} overflows"))?;
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("2 KiB").unwrap(), 2048);
        assert!(parse_bytes("12parsecs").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("99999999999999GiB").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("3 fortnights").is_err());
    }
}
