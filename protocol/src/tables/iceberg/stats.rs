//! Values of Iceberg columns: decoding bounds (Iceberg's single-value binary serialisation)
//! and partition values (Avro values), and writing them as Delta partition-value strings
//! and Delta stats JSON.
//!
//! Invariant: every emitted bound is a valid bound of the file's values, and exact where
//! Delta readers could use it to skip a file wrongly. So a bound that cannot be decoded
//! exactly is left out; string upper bounds are emitted only when the table's metrics mode
//! proves they were not truncated; timestamp bounds are rounded outwards to the millisecond;
//! floating bounds of a column holding NaN are left out; decimals are emitted only when a
//! JSON double carries them exactly (at most 15 significant digits).

use std::collections::HashMap;

use apache_avro::types::Value as AvroValue;
use serde_json::{json, Map, Value};
use time::macros::format_description;
use time::{Date, OffsetDateTime};

use super::schema::{Primitive, Schema};

/// Column truncation used by Iceberg writers when no property says otherwise.
const DEFAULT_TRUNCATE_CHARS: usize = 16;
const JULIAN_DAY_OF_EPOCH: i32 = 2_440_588;
const DECIMAL_EXACT_IN_DOUBLE_MAX: i128 = 1_000_000_000_000_000;

/// One decoded value of an Iceberg primitive column.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Boolean(bool),
    /// `int` and `long`.
    Integer(i64),
    Float(f32),
    Double(f64),
    Decimal {
        unscaled: i128,
        scale: u32,
    },
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since the epoch; `utc` for `timestamptz`.
    Timestamp {
        micros: i64,
        utc: bool,
    },
    String(String),
}

/// Per-file metrics from a manifest entry, keyed by Iceberg field id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileMetrics {
    pub record_count: i64,
    pub null_value_counts: HashMap<i32, i64>,
    pub nan_value_counts: HashMap<i32, i64>,
    pub lower_bounds: HashMap<i32, Vec<u8>>,
    pub upper_bounds: HashMap<i32, Vec<u8>>,
}

/// The columns stats can name in one schema: field id → path, type and how long a string
/// upper bound may be and still be exact.
#[derive(Clone, Debug, Default)]
pub struct StatsLayout {
    columns: HashMap<i32, StatsColumn>,
}

#[derive(Clone, Debug)]
struct StatsColumn {
    path: Vec<String>,
    primitive: Primitive,
    /// `None`: string upper bounds are never truncated (`full`); `Some(n)`: a bound shorter
    /// than `n` characters is exact.
    truncate_chars: Option<usize>,
}

impl StatsLayout {
    /// The layout of `schema` under the table `properties`
    /// (`write.metadata.metrics.default`, `write.metadata.metrics.column.<path>`).
    pub fn new(schema: &Schema, properties: &HashMap<String, String>) -> StatsLayout {
        let default_mode = properties
            .get("write.metadata.metrics.default")
            .map(String::as_str);
        let columns = schema
            .struct_paths()
            .into_iter()
            .map(|(id, (path, primitive))| {
                let column_mode = properties
                    .get(&format!("write.metadata.metrics.column.{}", path.join(".")))
                    .map(String::as_str);
                let truncate_chars = truncation(column_mode.or(default_mode));
                let column = StatsColumn {
                    path,
                    primitive,
                    truncate_chars,
                };
                (id, column)
            })
            .collect();
        StatsLayout { columns }
    }

    /// The Delta stats JSON string of one file:
    /// `{"numRecords":N,"minValues":{..},"maxValues":{..},"nullCount":{..}}`.
    pub fn delta_stats(&self, metrics: &FileMetrics) -> String {
        let mut min_values = Map::new();
        let mut max_values = Map::new();
        let mut null_count = Map::new();
        for (id, column) in &self.columns {
            if let Some(count) = metrics.null_value_counts.get(id) {
                insert_at(&mut null_count, &column.path, json!(count));
            }
            let has_nan = metrics
                .nan_value_counts
                .get(id)
                .is_some_and(|count| *count > 0);
            if has_nan && matches!(column.primitive, Primitive::Float | Primitive::Double) {
                continue;
            }
            if let Some(bytes) = metrics.lower_bounds.get(id) {
                if let Some(value) = decode_bound(bytes, &column.primitive)
                    .and_then(|scalar| stats_value(&scalar, Rounding::Down))
                {
                    insert_at(&mut min_values, &column.path, value);
                }
            }
            if let Some(bytes) = metrics.upper_bounds.get(id) {
                let Some(scalar) = decode_bound(bytes, &column.primitive) else {
                    continue;
                };
                if let (Scalar::String(text), Some(limit)) = (&scalar, column.truncate_chars) {
                    if text.chars().count() >= limit {
                        continue;
                    }
                }
                if let Some(value) = stats_value(&scalar, Rounding::Up) {
                    insert_at(&mut max_values, &column.path, value);
                }
            }
        }
        format!(
            "{{\"numRecords\":{},\"minValues\":{},\"maxValues\":{},\"nullCount\":{}}}",
            metrics.record_count,
            Value::Object(min_values),
            Value::Object(max_values),
            Value::Object(null_count)
        )
    }
}

/// Decodes an Iceberg single-value serialised bound; `None` when the bytes do not fit the
/// type (binary types are never decoded: Delta stats do not carry them).
pub fn decode_bound(bytes: &[u8], primitive: &Primitive) -> Option<Scalar> {
    Some(match primitive {
        Primitive::Boolean => match bytes {
            [0] => Scalar::Boolean(false),
            [1] => Scalar::Boolean(true),
            _ => return None,
        },
        // `int` promoted to `long` leaves 4-byte bounds in older files.
        Primitive::Int | Primitive::Long => Scalar::Integer(match bytes.len() {
            4 => i64::from(i32::from_le_bytes(bytes.try_into().ok()?)),
            8 => i64::from_le_bytes(bytes.try_into().ok()?),
            _ => return None,
        }),
        Primitive::Float => Scalar::Float(f32::from_le_bytes(bytes.try_into().ok()?)),
        Primitive::Double => Scalar::Double(match bytes.len() {
            4 => f64::from(f32::from_le_bytes(bytes.try_into().ok()?)),
            8 => f64::from_le_bytes(bytes.try_into().ok()?),
            _ => return None,
        }),
        Primitive::Date => Scalar::Date(i32::from_le_bytes(bytes.try_into().ok()?)),
        Primitive::Timestamp | Primitive::Timestamptz => Scalar::Timestamp {
            micros: i64::from_le_bytes(bytes.try_into().ok()?),
            utc: *primitive == Primitive::Timestamptz,
        },
        Primitive::String => Scalar::String(String::from_utf8(bytes.to_vec()).ok()?),
        Primitive::Decimal { scale, .. } => Scalar::Decimal {
            unscaled: big_endian_signed(bytes)?,
            scale: *scale,
        },
        Primitive::Time
        | Primitive::Uuid
        | Primitive::Fixed(_)
        | Primitive::Binary
        | Primitive::Other(_) => return None,
    })
}

/// Converts an Avro partition value of a column of type `primitive`. `Ok(None)` is a null;
/// `Err` names what did not fit.
pub fn scalar_from_avro(
    value: &AvroValue,
    primitive: &Primitive,
) -> std::result::Result<Option<Scalar>, String> {
    let mismatch = || format!("partition value {value:?} does not fit type {primitive:?}");
    let value = match value {
        AvroValue::Union(_, inner) => inner.as_ref(),
        other => other,
    };
    let scalar = match (primitive, value) {
        (_, AvroValue::Null) => return Ok(None),
        (Primitive::Boolean, AvroValue::Boolean(flag)) => Scalar::Boolean(*flag),
        (Primitive::Int | Primitive::Long, AvroValue::Int(number)) => {
            Scalar::Integer(i64::from(*number))
        }
        (Primitive::Int | Primitive::Long, AvroValue::Long(number)) => Scalar::Integer(*number),
        (Primitive::Float, AvroValue::Float(number)) => Scalar::Float(*number),
        (Primitive::Double, AvroValue::Float(number)) => Scalar::Double(f64::from(*number)),
        (Primitive::Double, AvroValue::Double(number)) => Scalar::Double(*number),
        (Primitive::Date, AvroValue::Date(days) | AvroValue::Int(days)) => Scalar::Date(*days),
        (
            Primitive::Timestamp | Primitive::Timestamptz,
            AvroValue::TimestampMicros(micros)
            | AvroValue::LocalTimestampMicros(micros)
            | AvroValue::Long(micros),
        ) => Scalar::Timestamp {
            micros: *micros,
            utc: *primitive == Primitive::Timestamptz,
        },
        (Primitive::String, AvroValue::String(text)) => Scalar::String(text.clone()),
        (Primitive::Decimal { scale, .. }, AvroValue::Decimal(decimal)) => {
            let bytes = Vec::<u8>::try_from(decimal).map_err(|_| mismatch())?;
            Scalar::Decimal {
                unscaled: big_endian_signed(&bytes).ok_or_else(mismatch)?,
                scale: *scale,
            }
        }
        (
            Primitive::Decimal { scale, .. },
            AvroValue::Fixed(_, bytes) | AvroValue::Bytes(bytes),
        ) => Scalar::Decimal {
            unscaled: big_endian_signed(bytes).ok_or_else(mismatch)?,
            scale: *scale,
        },
        _ => return Err(mismatch()),
    };
    Ok(Some(scalar))
}

/// The Delta partition-value string of `scalar`: dates `YYYY-MM-DD`, timestamps
/// `YYYY-MM-DD HH:MM:SS.ffffff` (UTC for `timestamptz`), numbers and decimals plain.
pub fn partition_string(scalar: &Scalar) -> Option<String> {
    Some(match scalar {
        Scalar::Boolean(flag) => flag.to_string(),
        Scalar::Integer(number) => number.to_string(),
        Scalar::Float(number) => number.to_string(),
        Scalar::Double(number) => number.to_string(),
        Scalar::Decimal { unscaled, scale } => decimal_string(*unscaled, *scale),
        Scalar::Date(days) => date_string(*days)?,
        Scalar::Timestamp { micros, .. } => {
            let format = format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]"
            );
            timestamp(*micros)?.format(&format).ok()?
        }
        Scalar::String(text) => text.clone(),
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rounding {
    Down,
    Up,
}

/// The Delta stats JSON value of a bound, or `None` when JSON cannot carry it exactly.
fn stats_value(scalar: &Scalar, rounding: Rounding) -> Option<Value> {
    Some(match scalar {
        Scalar::Boolean(flag) => json!(flag),
        Scalar::Integer(number) => json!(number),
        Scalar::Float(number) if number.is_finite() => json!(number),
        Scalar::Double(number) if number.is_finite() => json!(number),
        Scalar::Float(_) | Scalar::Double(_) => return None,
        Scalar::Decimal { unscaled, scale } => {
            if unscaled.unsigned_abs() >= DECIMAL_EXACT_IN_DOUBLE_MAX.unsigned_abs() {
                return None;
            }
            let number: f64 = decimal_string(*unscaled, *scale).parse().ok()?;
            json!(number)
        }
        Scalar::Date(days) => json!(date_string(*days)?),
        Scalar::Timestamp { micros, utc } => {
            let millis = match rounding {
                Rounding::Down => micros.div_euclid(1000),
                Rounding::Up => micros.checked_add(999)?.div_euclid(1000),
            };
            let instant = timestamp(millis.checked_mul(1000)?)?;
            let format = format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]"
            );
            let text = instant.format(&format).ok()?;
            json!(if *utc { text + "Z" } else { text })
        }
        Scalar::String(text) => json!(text),
    })
}

fn truncation(mode: Option<&str>) -> Option<usize> {
    let Some(mode) = mode.map(str::trim) else {
        return Some(DEFAULT_TRUNCATE_CHARS);
    };
    if mode.eq_ignore_ascii_case("full") {
        return None;
    }
    mode.strip_prefix("truncate(")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|length| length.trim().parse::<usize>().ok())
        // `counts`, `none` or unreadable: trust no string upper bound.
        .or(Some(0))
}

fn insert_at(target: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = target;
    for parent in parents {
        let entry = current
            .entry(parent.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(next) = entry else {
            return;
        };
        current = next;
    }
    current.insert(last.clone(), value);
}

fn big_endian_signed(bytes: &[u8]) -> Option<i128> {
    if bytes.is_empty() || bytes.len() > 16 {
        return None;
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut buffer = [fill; 16];
    buffer[16 - bytes.len()..].copy_from_slice(bytes);
    Some(i128::from_be_bytes(buffer))
}

fn decimal_string(unscaled: i128, scale: u32) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

fn date_string(days: i32) -> Option<String> {
    let date = Date::from_julian_day(JULIAN_DAY_OF_EPOCH.checked_add(days)?).ok()?;
    date.format(format_description!("[year]-[month]-[day]"))
        .ok()
}

fn timestamp(micros: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layout(properties: &[(&str, &str)]) -> StatsLayout {
        let schema: Schema = serde_json::from_value(json!({"type": "struct", "fields": [
            {"id": 1, "name": "i", "required": false, "type": "int"},
            {"id": 2, "name": "l", "required": false, "type": "long"},
            {"id": 3, "name": "d", "required": false, "type": "double"},
            {"id": 4, "name": "s", "required": false, "type": "string"},
            {"id": 5, "name": "day", "required": false, "type": "date"},
            {"id": 6, "name": "ts", "required": false, "type": "timestamptz"},
            {"id": 7, "name": "dec", "required": false, "type": "decimal(9, 2)"},
            {"id": 8, "name": "st", "required": false, "type": {"type": "struct", "fields": [
                {"id": 9, "name": "flag", "required": false, "type": "boolean"},
                {"id": 10, "name": "ntz", "required": false, "type": "timestamp"}]}},
            {"id": 11, "name": "bin", "required": false, "type": "binary"},
            {"id": 12, "name": "f", "required": false, "type": "float"}
        ]}))
        .unwrap();
        let properties = properties
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        StatsLayout::new(&schema, &properties)
    }

    fn stats(layout: &StatsLayout, metrics: &FileMetrics) -> Value {
        serde_json::from_str(&layout.delta_stats(metrics)).unwrap()
    }

    #[test]
    fn bounds_of_every_decodable_type_become_delta_stats() {
        let micros: i64 = 1_704_110_400_123_456; // 2024-01-01T12:00:00.123456Z
        let metrics = FileMetrics {
            record_count: 3,
            null_value_counts: HashMap::from([(1, 0), (4, 1), (9, 2)]),
            nan_value_counts: HashMap::new(),
            lower_bounds: HashMap::from([
                (1, (-5i32).to_le_bytes().to_vec()),
                (2, 7i32.to_le_bytes().to_vec()), // promoted int bound
                (3, 1.5f64.to_le_bytes().to_vec()),
                (4, b"apple".to_vec()),
                (5, 19723i32.to_le_bytes().to_vec()),
                (6, micros.to_le_bytes().to_vec()),
                (7, vec![0xff, 0x85]), // -123 → -1.23
                (9, vec![0]),
                (10, micros.to_le_bytes().to_vec()),
                (11, vec![1, 2]),
            ]),
            upper_bounds: HashMap::from([
                (1, 9i32.to_le_bytes().to_vec()),
                (4, b"pear".to_vec()),
                (6, micros.to_le_bytes().to_vec()),
                (7, vec![0x30, 0x39]), // 12345 → 123.45
                (9, vec![1]),
            ]),
        };
        let value = stats(&layout(&[]), &metrics);
        assert_eq!(
            value,
            json!({
                "numRecords": 3,
                "minValues": {"i": -5, "l": 7, "d": 1.5, "s": "apple", "day": "2024-01-01",
                    "ts": "2024-01-01T12:00:00.123Z", "dec": -1.23,
                    "st": {"flag": false, "ntz": "2024-01-01T12:00:00.123"}},
                "maxValues": {"i": 9, "s": "pear", "ts": "2024-01-01T12:00:00.124Z",
                    "dec": 123.45, "st": {"flag": true}},
                "nullCount": {"i": 0, "s": 1, "st": {"flag": 2}}
            })
        );
        assert!(layout(&[])
            .delta_stats(&metrics)
            .starts_with("{\"numRecords\":3,"));
    }

    #[test]
    fn possibly_truncated_string_upper_bounds_are_left_out() {
        let metrics = FileMetrics {
            record_count: 1,
            lower_bounds: HashMap::from([(4, b"aaaaaaaaaaaaaaaaaaaa".to_vec())]),
            upper_bounds: HashMap::from([(4, b"zzzzzzzzzzzzzzz{".to_vec())]),
            ..FileMetrics::default()
        };
        let default = stats(&layout(&[]), &metrics);
        assert_eq!(default["minValues"]["s"], json!("aaaaaaaaaaaaaaaaaaaa"));
        assert_eq!(default["maxValues"], json!({}));

        let full = stats(
            &layout(&[("write.metadata.metrics.column.s", "full")]),
            &metrics,
        );
        assert_eq!(full["maxValues"]["s"], json!("zzzzzzzzzzzzzzz{"));

        let wide = stats(
            &layout(&[("write.metadata.metrics.default", "truncate(32)")]),
            &metrics,
        );
        assert_eq!(wide["maxValues"]["s"], json!("zzzzzzzzzzzzzzz{"));

        let counts = stats(
            &layout(&[("write.metadata.metrics.default", "counts")]),
            &metrics,
        );
        assert_eq!(counts["maxValues"], json!({}));
    }

    #[test]
    fn undecodable_nan_and_inexact_bounds_are_left_out() {
        let metrics = FileMetrics {
            record_count: 1,
            nan_value_counts: HashMap::from([(3, 1)]),
            lower_bounds: HashMap::from([
                (1, vec![1, 2, 3]),                 // wrong width
                (3, 1.0f64.to_le_bytes().to_vec()), // column has NaN
                (4, vec![0xff, 0xfe]),              // not UTF-8
                (7, vec![0x7f; 9]),                 // more than 15 digits
                (12, f32::INFINITY.to_le_bytes().to_vec()),
            ]),
            ..FileMetrics::default()
        };
        assert_eq!(stats(&layout(&[]), &metrics)["minValues"], json!({}));
    }

    #[test]
    fn partition_values_use_delta_strings() {
        let cases = [
            (AvroValue::Date(19723), Primitive::Date, Some("2024-01-01")),
            (
                AvroValue::Union(
                    1,
                    Box::new(AvroValue::TimestampMicros(1_704_110_400_000_001)),
                ),
                Primitive::Timestamptz,
                Some("2024-01-01 12:00:00.000001"),
            ),
            (AvroValue::Boolean(true), Primitive::Boolean, Some("true")),
            (AvroValue::Int(-3), Primitive::Long, Some("-3")),
            (AvroValue::Double(2.5), Primitive::Double, Some("2.5")),
            (
                AvroValue::Decimal(vec![0x00, 0x05].into()),
                Primitive::Decimal {
                    precision: 5,
                    scale: 3,
                },
                Some("0.005"),
            ),
            (
                AvroValue::Bytes(vec![0xfb]),
                Primitive::Decimal {
                    precision: 3,
                    scale: 0,
                },
                Some("-5"),
            ),
            (
                AvroValue::String("a b".into()),
                Primitive::String,
                Some("a b"),
            ),
            (
                AvroValue::Union(0, Box::new(AvroValue::Null)),
                Primitive::Int,
                None,
            ),
        ];
        for (avro, primitive, expected) in cases {
            let scalar = scalar_from_avro(&avro, &primitive).unwrap();
            let text = scalar.as_ref().and_then(partition_string);
            assert_eq!(text.as_deref(), expected, "{avro:?}");
        }
        assert!(scalar_from_avro(&AvroValue::String("x".into()), &Primitive::Int).is_err());
    }
}
