//! `jsonPredicateHints` and `limitHint` of `POST .../query`: parsing the predicate tree once
//! per request and deciding, per file, whether the file might hold a matching row.
//!
//! Invariant: [`might_match`] returns `false` only when no row of the file can satisfy the
//! predicate. A hint that does not parse filters nothing ([`parse_predicate`] returns `None`),
//! and anything that cannot be decided for one file (missing stats, a value that does not
//! parse, an unsupported shape) keeps that file.
//!
//! How the invariant is kept:
//! - `not` is pushed down to the leaves when the tree is parsed (De Morgan, flipped
//!   comparisons), so no "unknown" is ever inverted. A comparison that sits under an odd number
//!   of `not`s may be satisfied by NULL rows in clients that treat NOT as the complement
//!   (pandas: `~(x < 5)` keeps NaN and None rows), so such a comparison can only exclude a file
//!   that provably has no NULL in the column.
//! - Partition columns are evaluated exactly on the file's partition value (an empty string is
//!   NULL). A comparison with a NULL partition value holds for no row unless it is negated.
//! - Data columns are evaluated on the stats: a comparison can only answer False (the range
//!   excludes every value) or Unknown. Bounds are taken conservatively: a string `max` may be a
//!   truncated prefix, so it bounds values only as "below `max` followed by any suffix";
//!   millisecond timestamp stats are widened by a millisecond on both sides; float and double
//!   `max` never excludes `>`/`>=`, because NaN sorts above every number in Spark and is not
//!   in the stats, and a negated float comparison or a float `isNull` is never excluded,
//!   because NaN counts as missing in dataframe libraries but not in `nullCount`.
//! - `isNull` on a data column uses `nullCount` against `numRecords`.
//!
//! Column names in the hint are logical. Under column mapping the caller passes the
//! logical-to-physical map; partition values and stats are looked up by physical name, and a
//! dotted name `a.b` is looked up as a nested field in the stats.
//!
//! Trees deeper than [`PREDICATE_DEPTH_MAX`] or texts longer than [`PREDICATE_TEXT_BYTES_MAX`]
//! are refused like the reference server. `serde_json` also refuses JSON nested deeper than 128
//! levels, which a tree of more than 64 levels needs; such hints filter nothing, which is safe.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::BuildHasher;

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime};

/// Longest accepted `jsonPredicateHints` text, as in the reference server.
pub const PREDICATE_TEXT_BYTES_MAX: usize = 1024 * 1024;

/// Deepest accepted predicate tree, counting the leaves as a level (reference semantics:
/// `and(equal(column, literal))` is 3 deep).
pub const PREDICATE_DEPTH_MAX: usize = 100;

/// Value types of `column` and `literal` leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    Bool,
    Int,
    Long,
    String,
    Date,
    Float,
    Double,
    Timestamp,
}

impl ValueType {
    /// The type named `name` on the wire, or `None` when unsupported.
    pub fn from_wire(name: &str) -> Option<ValueType> {
        Some(match name {
            "bool" => ValueType::Bool,
            "int" => ValueType::Int,
            "long" => ValueType::Long,
            "string" => ValueType::String,
            "date" => ValueType::Date,
            "float" => ValueType::Float,
            "double" => ValueType::Double,
            "timestamp" => ValueType::Timestamp,
            _ => return None,
        })
    }

    fn is_floating(self) -> bool {
        matches!(self, ValueType::Float | ValueType::Double)
    }
}

/// Outcome of a predicate on one file: every row matches, no row matches, or cannot tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tri {
    True,
    False,
    Unknown,
}

impl Tri {
    fn from_bool(value: bool) -> Tri {
        if value {
            Tri::True
        } else {
            Tri::False
        }
    }

    fn negate_if(self, negated: bool) -> Tri {
        match (self, negated) {
            (Tri::True, true) => Tri::False,
            (Tri::False, true) => Tri::True,
            (other, _) => other,
        }
    }
}

/// A parsed `jsonPredicateHints` tree, already in negation normal form. Parse it once per
/// request and evaluate it on every file.
#[derive(Clone, Debug, PartialEq)]
pub struct Predicate {
    root: Node,
}

/// Partition values of one file, keyed by physical column name.
///
/// Implement it on the snapshot's own file representation to avoid building a map per file.
pub trait PartitionValues {
    /// `None`: the file has no entry for `physical_name`. `Some(None)`: the value is NULL.
    fn partition_value(&self, physical_name: &str) -> Option<Option<&str>>;
}

impl<S: BuildHasher> PartitionValues for HashMap<String, Option<String>, S> {
    fn partition_value(&self, physical_name: &str) -> Option<Option<&str>> {
        self.get(physical_name).map(Option::as_deref)
    }
}

impl<S: BuildHasher> PartitionValues for HashMap<String, String, S> {
    fn partition_value(&self, physical_name: &str) -> Option<Option<&str>> {
        self.get(physical_name).map(|value| Some(value.as_str()))
    }
}

/// The `partitionValues` object of an `add` action as parsed JSON.
impl PartitionValues for Map<String, Value> {
    fn partition_value(&self, physical_name: &str) -> Option<Option<&str>> {
        match self.get(physical_name)? {
            Value::Null => Some(None),
            Value::String(text) => Some(Some(text.as_str())),
            _ => None,
        }
    }
}

/// What is known about one file when deciding whether it might match.
#[derive(Clone, Copy)]
pub struct FileFacts<'a> {
    /// Logical names of the table's partition columns (`metaData.partitionColumns`).
    pub partition_columns: &'a [String],
    /// Logical to physical column names under column mapping; dotted paths for nested fields.
    pub physical_names: Option<&'a HashMap<String, String>>,
    /// The file's partition values, keyed by physical name.
    pub partition_values: &'a dyn PartitionValues,
    /// The file's parsed `stats` object (`numRecords`, `minValues`, `maxValues`, `nullCount`).
    pub stats: Option<&'a Value>,
}

impl<'a> FileFacts<'a> {
    pub fn new(
        partition_columns: &'a [String],
        partition_values: &'a dyn PartitionValues,
    ) -> FileFacts<'a> {
        FileFacts {
            partition_columns,
            physical_names: None,
            partition_values,
            stats: None,
        }
    }

    pub fn with_stats(self, stats: Option<&'a Value>) -> FileFacts<'a> {
        FileFacts { stats, ..self }
    }

    pub fn with_physical_names(self, physical_names: &'a HashMap<String, String>) -> Self {
        FileFacts {
            physical_names: Some(physical_names),
            ..self
        }
    }
}

/// Parses `jsonPredicateHints`. `None` means "filter nothing": the text is empty, too long,
/// not JSON, too deep, or names an unknown op or type, mismatched types, a wrong number of
/// children or a literal that does not parse as its type.
pub fn parse_predicate(json_text: &str) -> Option<Predicate> {
    if json_text.trim().is_empty() || json_text.len() > PREDICATE_TEXT_BYTES_MAX {
        return None;
    }
    let value: Value = serde_json::from_str(json_text).ok()?;
    let root = parse_node(&value, 1, false)?;
    Some(Predicate { root })
}

/// Whether the file described by `facts` might hold a row matching `predicate`.
pub fn might_match(predicate: &Predicate, facts: &FileFacts) -> bool {
    evaluate(predicate, facts) != Tri::False
}

/// The three-valued outcome of `predicate` on one file. Comparisons on stats never answer
/// True; partition comparisons and `isNull` may.
pub fn evaluate(predicate: &Predicate, facts: &FileFacts) -> Tri {
    eval_node(&predicate.root, facts)
}

/// Whether a limit of `limit` records is met by `records_so_far`.
pub fn limit_reached(records_so_far: u64, limit: u64) -> bool {
    records_so_far >= limit
}

/// Records a file contributes towards `limitHint`: `numRecords` minus the deletion vector's
/// cardinality; 0 when the stats do not say.
pub fn live_records(stats: Option<&Value>, deletion_vector_cardinality: Option<u64>) -> u64 {
    let records = stats
        .and_then(|stats| stats.get("numRecords"))
        .and_then(Value::as_u64);
    records
        .unwrap_or(0)
        .saturating_sub(deletion_vector_cardinality.unwrap_or(0))
}

/// Applies `limitHint` the way the reference server does: files are emitted in order until the
/// running sum of their live records reaches the limit. Only meaningful when the request has
/// no predicate hints of either kind (see [`LimitTracker::for_request`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitTracker {
    limit_records: u64,
    records_so_far: u64,
}

impl LimitTracker {
    pub fn new(limit_records: u64) -> LimitTracker {
        LimitTracker {
            limit_records,
            records_so_far: 0,
        }
    }

    /// A tracker when the limit applies: a limit was given and no predicate hint was.
    pub fn for_request(limit_hint: Option<u64>, has_predicate_hints: bool) -> Option<Self> {
        match limit_hint {
            Some(limit) if !has_predicate_hints => Some(LimitTracker::new(limit)),
            _ => None,
        }
    }

    /// Whether the next file is emitted; when it is, its `live_records` are counted.
    pub fn admit(&mut self, live_records: u64) -> bool {
        if self.is_reached() {
            return false;
        }
        self.records_so_far = self.records_so_far.saturating_add(live_records);
        true
    }

    /// Whether no further file will be admitted.
    pub fn is_reached(&self) -> bool {
        limit_reached(self.records_so_far, self.limit_records)
    }

    pub fn records_so_far(&self) -> u64 {
        self.records_so_far
    }
}

/// A node of the predicate in negation normal form: `not` only survives inside `Compare`
/// (as the flipped operator plus `nulls_may_match`) and `IsNull` (as `negated`).
#[derive(Clone, Debug, PartialEq)]
enum Node {
    Constant(Tri),
    Compare {
        column: ColumnRef,
        op: CompareOp,
        literal: Scalar,
        nulls_may_match: bool,
    },
    IsNull {
        column: ColumnRef,
        negated: bool,
    },
    And(Vec<Node>),
    Or(Vec<Node>),
}

#[derive(Clone, Debug, PartialEq)]
struct ColumnRef {
    /// Logical name, possibly a dotted path to a nested field.
    name: String,
    value_type: ValueType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CompareOp {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl CompareOp {
    fn from_wire(name: &str) -> Option<CompareOp> {
        Some(match name {
            "equal" => CompareOp::Equal,
            "lessThan" => CompareOp::Less,
            "lessThanOrEqual" => CompareOp::LessOrEqual,
            "greaterThan" => CompareOp::Greater,
            "greaterThanOrEqual" => CompareOp::GreaterOrEqual,
            _ => return None,
        })
    }

    /// The operator whose result is the complement of this one on non-NULL values.
    fn negated(self) -> CompareOp {
        match self {
            CompareOp::Equal => CompareOp::NotEqual,
            CompareOp::NotEqual => CompareOp::Equal,
            CompareOp::Less => CompareOp::GreaterOrEqual,
            CompareOp::LessOrEqual => CompareOp::Greater,
            CompareOp::Greater => CompareOp::LessOrEqual,
            CompareOp::GreaterOrEqual => CompareOp::Less,
        }
    }

    /// The operator with its operands swapped: `a < b` is `b > a`.
    fn swapped(self) -> CompareOp {
        match self {
            CompareOp::Less => CompareOp::Greater,
            CompareOp::LessOrEqual => CompareOp::GreaterOrEqual,
            CompareOp::Greater => CompareOp::Less,
            CompareOp::GreaterOrEqual => CompareOp::LessOrEqual,
            same => same,
        }
    }

    fn holds(self, ordering: Ordering) -> bool {
        match self {
            CompareOp::Equal => ordering == Ordering::Equal,
            CompareOp::NotEqual => ordering != Ordering::Equal,
            CompareOp::Less => ordering == Ordering::Less,
            CompareOp::LessOrEqual => ordering != Ordering::Greater,
            CompareOp::Greater => ordering == Ordering::Greater,
            CompareOp::GreaterOrEqual => ordering != Ordering::Less,
        }
    }
}

/// A literal, typed. Int and long are `Integer`; float literals are rounded to `f32` first.
#[derive(Clone, Debug, PartialEq)]
enum Scalar {
    Bool(bool),
    Integer(i64),
    Floating(f64),
    Text(Box<str>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since the Unix epoch.
    Timestamp(i64),
}

impl Scalar {
    fn datum(&self) -> Datum<'_> {
        match self {
            Scalar::Bool(value) => Datum::Bool(*value),
            Scalar::Integer(value) => Datum::Integer(*value),
            Scalar::Floating(value) => Datum::Floating(*value),
            Scalar::Text(value) => Datum::Text(value),
            Scalar::Date(value) => Datum::Date(*value),
            Scalar::Timestamp(value) => Datum::Timestamp(*value),
        }
    }
}

/// A borrowed typed value: a literal, a partition value or a stats bound.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Datum<'a> {
    Bool(bool),
    Integer(i64),
    Floating(f64),
    Text(&'a str),
    Date(i32),
    Timestamp(i64),
}

/// Orders two values of the same type; `None` for different types or NaN.
fn compare_datums(left: Datum, right: Datum) -> Option<Ordering> {
    match (left, right) {
        (Datum::Bool(left), Datum::Bool(right)) => Some(left.cmp(&right)),
        (Datum::Integer(left), Datum::Integer(right)) => Some(left.cmp(&right)),
        (Datum::Floating(left), Datum::Floating(right)) => left.partial_cmp(&right),
        (Datum::Text(left), Datum::Text(right)) => Some(left.as_bytes().cmp(right.as_bytes())),
        (Datum::Date(left), Datum::Date(right)) => Some(left.cmp(&right)),
        (Datum::Timestamp(left), Datum::Timestamp(right)) => Some(left.cmp(&right)),
        _ => None,
    }
}

enum Leaf {
    Column(ColumnRef),
    Literal(Scalar, ValueType),
}

impl Leaf {
    fn value_type(&self) -> ValueType {
        match self {
            Leaf::Column(column) => column.value_type,
            Leaf::Literal(_, value_type) => *value_type,
        }
    }
}

/// Parses `value` at tree depth `depth`, pushing a pending `not` (`negated`) down.
fn parse_node(value: &Value, depth: usize, negated: bool) -> Option<Node> {
    if depth > PREDICATE_DEPTH_MAX {
        return None;
    }
    let object = value.as_object()?;
    let op = object.get("op")?.as_str()?;
    match op {
        "column" | "literal" => {
            let leaf = parse_leaf(object)?;
            Some(leaf_as_predicate(leaf, negated))
        }
        "not" => {
            let [child] = children(object)? else {
                return None;
            };
            parse_node(child, depth + 1, !negated)
        }
        "and" | "or" => {
            let children = children(object)?;
            if children.len() < 2 {
                return None;
            }
            let nodes = children
                .iter()
                .map(|child| parse_node(child, depth + 1, negated))
                .collect::<Option<Vec<Node>>>()?;
            // De Morgan: under `not`, `and` becomes `or` and the other way round.
            Some(if (op == "and") != negated {
                Node::And(nodes)
            } else {
                Node::Or(nodes)
            })
        }
        "isNull" => {
            let [child] = children(object)? else {
                return None;
            };
            if depth + 1 > PREDICATE_DEPTH_MAX {
                return None;
            }
            match parse_leaf(child.as_object()?)? {
                Leaf::Column(column) => Some(Node::IsNull { column, negated }),
                Leaf::Literal(..) => Some(Node::Constant(Tri::False.negate_if(negated))),
            }
        }
        _ => {
            let op = CompareOp::from_wire(op)?;
            let [left, right] = children(object)? else {
                return None;
            };
            if depth + 1 > PREDICATE_DEPTH_MAX {
                return None;
            }
            let left = parse_leaf(left.as_object()?)?;
            let right = parse_leaf(right.as_object()?)?;
            if left.value_type() != right.value_type() {
                return None;
            }
            let op = if negated { op.negated() } else { op };
            Some(comparison(op, left, right, negated))
        }
    }
}

fn children(object: &Map<String, Value>) -> Option<&[Value]> {
    object.get("children")?.as_array().map(Vec::as_slice)
}

fn parse_leaf(object: &Map<String, Value>) -> Option<Leaf> {
    let value_type = ValueType::from_wire(object.get("valueType")?.as_str()?)?;
    match object.get("op")?.as_str()? {
        "column" => {
            let name = object.get("name")?.as_str()?;
            Some(Leaf::Column(ColumnRef {
                name: name.to_owned(),
                value_type,
            }))
        }
        "literal" => {
            // The wire sends literals as strings; numbers and booleans are accepted as text.
            let text = match object.get("value")? {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                _ => return None,
            };
            Some(Leaf::Literal(parse_literal(&text, value_type)?, value_type))
        }
        _ => None,
    }
}

/// A leaf used where a boolean is expected: a bool column or a bool literal. Other types are
/// not predicates and evaluate to Unknown.
fn leaf_as_predicate(leaf: Leaf, negated: bool) -> Node {
    match leaf {
        Leaf::Column(column) if column.value_type == ValueType::Bool => {
            let op = if negated {
                CompareOp::NotEqual
            } else {
                CompareOp::Equal
            };
            Node::Compare {
                column,
                op,
                literal: Scalar::Bool(true),
                nulls_may_match: negated,
            }
        }
        Leaf::Literal(Scalar::Bool(value), _) => Node::Constant(Tri::from_bool(value != negated)),
        _ => Node::Constant(Tri::Unknown),
    }
}

/// `op` is already negated when `negated`; the operands are in wire order.
fn comparison(op: CompareOp, left: Leaf, right: Leaf, negated: bool) -> Node {
    match (left, right) {
        (Leaf::Column(column), Leaf::Literal(literal, _)) => {
            compare_node(column, op, literal, negated)
        }
        (Leaf::Literal(literal, _), Leaf::Column(column)) => {
            compare_node(column, op.swapped(), literal, negated)
        }
        (Leaf::Literal(left, _), Leaf::Literal(right, _)) => {
            match compare_datums(left.datum(), right.datum()) {
                Some(ordering) => Node::Constant(Tri::from_bool(op.holds(ordering))),
                None => Node::Constant(Tri::Unknown),
            }
        }
        (Leaf::Column(_), Leaf::Column(_)) => Node::Constant(Tri::Unknown),
    }
}

fn compare_node(column: ColumnRef, op: CompareOp, literal: Scalar, negated: bool) -> Node {
    if matches!(literal, Scalar::Floating(value) if value.is_nan()) {
        return Node::Constant(Tri::Unknown);
    }
    Node::Compare {
        column,
        op,
        literal,
        nulls_may_match: negated,
    }
}

/// Parses a literal's text as `value_type`, as strictly as the reference server validates it.
fn parse_literal(text: &str, value_type: ValueType) -> Option<Scalar> {
    Some(match value_type {
        ValueType::Bool => Scalar::Bool(parse_bool(text)?),
        ValueType::Int => Scalar::Integer(i64::from(text.parse::<i32>().ok()?)),
        ValueType::Long => Scalar::Integer(text.parse::<i64>().ok()?),
        ValueType::String => Scalar::Text(text.into()),
        ValueType::Date => Scalar::Date(parse_date(text)?),
        ValueType::Float => Scalar::Floating(f64::from(text.trim().parse::<f32>().ok()?)),
        ValueType::Double => Scalar::Floating(text.trim().parse::<f64>().ok()?),
        ValueType::Timestamp => Scalar::Timestamp(parse_timestamp(text)?.0),
    })
}

fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// `yyyy-[m]m-[d]d` to days since the epoch.
fn parse_date(text: &str) -> Option<i32> {
    let mut parts = text.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || year.len() != 4 || !(1..=2).contains(&month.len()) {
        return None;
    }
    if !(1..=2).contains(&day.len()) {
        return None;
    }
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if !all_digits(year) || !all_digits(month) || !all_digits(day) {
        return None;
    }
    let month = Month::try_from(month.parse::<u8>().ok()?).ok()?;
    let date = Date::from_calendar_date(year.parse().ok()?, month, day.parse().ok()?).ok()?;
    Some(date.to_julian_day() - UNIX_EPOCH_JULIAN_DAY)
}

/// Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i32 = 2_440_588;

/// Microseconds the writer may have cut from a timestamp stat written in milliseconds.
const TIMESTAMP_STATS_SLACK_MICROS: i64 = 1_000;

/// An RFC 3339 timestamp with an offset to microseconds since the epoch, and whether it
/// carries at most millisecond precision (so may have been truncated or rounded by a writer).
fn parse_timestamp(text: &str) -> Option<(i64, bool)> {
    let instant = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    let micros = i64::try_from(instant.unix_timestamp_nanos().div_euclid(1_000)).ok()?;
    let fraction_digits = match text.find('.') {
        Some(dot) => text[dot + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count(),
        None => 0,
    };
    Some((micros, fraction_digits <= 3))
}

/// A partition value's text as `value_type`. Timestamps without an offset are refused (their
/// time zone is the writer's), which makes the comparison Unknown.
fn parse_partition_datum(text: &str, value_type: ValueType) -> Option<Datum<'_>> {
    Some(match value_type {
        ValueType::Bool => Datum::Bool(parse_bool(text)?),
        ValueType::Int | ValueType::Long => Datum::Integer(text.parse().ok()?),
        ValueType::String => Datum::Text(text),
        ValueType::Date => Datum::Date(parse_date(text)?),
        ValueType::Float => Datum::Floating(f64::from(text.parse::<f32>().ok()?)),
        ValueType::Double => Datum::Floating(text.parse().ok()?),
        ValueType::Timestamp => Datum::Timestamp(parse_timestamp(text)?.0),
    })
}

/// Where a column's facts come from in one file.
enum ColumnSource<'a> {
    /// A partition column: its value, `None` when NULL.
    Partition(Option<&'a str>),
    /// A partition column the file has no value for.
    PartitionMissing,
    /// A data column: its physical path in the stats.
    Data(&'a str),
}

fn column_source<'a>(column: &'a ColumnRef, facts: &FileFacts<'a>) -> ColumnSource<'a> {
    let physical = facts
        .physical_names
        .and_then(|names| names.get(&column.name))
        .map_or(column.name.as_str(), String::as_str);
    if facts.partition_columns.contains(&column.name) {
        match facts.partition_values.partition_value(physical) {
            Some(value) => ColumnSource::Partition(value.filter(|text| !text.is_empty())),
            None => ColumnSource::PartitionMissing,
        }
    } else {
        ColumnSource::Data(physical)
    }
}

fn eval_node(node: &Node, facts: &FileFacts) -> Tri {
    match node {
        Node::Constant(outcome) => *outcome,
        Node::And(children) => {
            let mut outcome = Tri::True;
            for child in children {
                match eval_node(child, facts) {
                    Tri::False => return Tri::False,
                    Tri::Unknown => outcome = Tri::Unknown,
                    Tri::True => {}
                }
            }
            outcome
        }
        Node::Or(children) => {
            let mut outcome = Tri::False;
            for child in children {
                match eval_node(child, facts) {
                    Tri::True => return Tri::True,
                    Tri::Unknown => outcome = Tri::Unknown,
                    Tri::False => {}
                }
            }
            outcome
        }
        Node::IsNull { column, negated } => match column_source(column, facts) {
            ColumnSource::Partition(value) => Tri::from_bool(value.is_none()).negate_if(*negated),
            ColumnSource::PartitionMissing => Tri::Unknown,
            ColumnSource::Data(path) => eval_is_null_on_stats(column, path, *negated, facts),
        },
        Node::Compare {
            column,
            op,
            literal,
            nulls_may_match,
        } => match column_source(column, facts) {
            ColumnSource::Partition(None) => {
                if *nulls_may_match {
                    Tri::Unknown
                } else {
                    Tri::False
                }
            }
            ColumnSource::Partition(Some(text)) => {
                let Some(value) = parse_partition_datum(text, column.value_type) else {
                    return Tri::Unknown;
                };
                match compare_datums(value, literal.datum()) {
                    Some(ordering) => Tri::from_bool(op.holds(ordering)),
                    None => Tri::Unknown,
                }
            }
            ColumnSource::PartitionMissing => Tri::Unknown,
            ColumnSource::Data(path) => {
                let Some(stats) = facts.stats else {
                    return Tri::Unknown;
                };
                let comparison = StatsComparison {
                    column,
                    op: *op,
                    literal: literal.datum(),
                };
                comparison.evaluate(stats, path, *nulls_may_match)
            }
        },
    }
}

/// Null facts of one column in one file's stats.
struct NullFacts {
    records: Option<u64>,
    nulls: Option<u64>,
}

impl NullFacts {
    fn read(stats: &Value, path: &str) -> NullFacts {
        NullFacts {
            records: stats.get("numRecords").and_then(Value::as_u64),
            nulls: stat_at(stats, "nullCount", path).and_then(Value::as_u64),
        }
    }

    fn is_empty_file(&self) -> bool {
        self.records == Some(0)
    }

    fn all_null(&self) -> bool {
        matches!((self.records, self.nulls), (Some(records), Some(nulls)) if nulls >= records)
    }

    fn none_null(&self) -> bool {
        self.nulls == Some(0)
    }
}

fn eval_is_null_on_stats(column: &ColumnRef, path: &str, negated: bool, facts: &FileFacts) -> Tri {
    let Some(stats) = facts.stats else {
        return Tri::Unknown;
    };
    let null_facts = NullFacts::read(stats, path);
    if null_facts.is_empty_file() {
        return Tri::False;
    }
    let is_null = if null_facts.all_null() {
        Tri::True
    } else if null_facts.none_null() && !column.value_type.is_floating() {
        // Not for floats: NaN is not counted as NULL but dataframe libraries treat it as one.
        Tri::False
    } else {
        Tri::Unknown
    };
    is_null.negate_if(negated)
}

/// The upper bound the stats give for a column's non-NULL values.
enum UpperBound<'a> {
    /// No usable bound.
    Unbounded,
    /// Every value is at most this.
    Inclusive(Datum<'a>),
    /// Every value is below this string followed by a 0xFF byte: the stat may be a truncated
    /// prefix of the real maximum.
    TextPrefix(&'a str),
}

struct StatsComparison<'a> {
    column: &'a ColumnRef,
    op: CompareOp,
    literal: Datum<'a>,
}

impl<'a> StatsComparison<'a> {
    /// False when the stats prove no row satisfies the comparison, else Unknown.
    fn evaluate(&self, stats: &'a Value, path: &str, nulls_may_match: bool) -> Tri {
        let null_facts = NullFacts::read(stats, path);
        if null_facts.is_empty_file() {
            return Tri::False;
        }
        if nulls_may_match && (!null_facts.none_null() || self.column.value_type.is_floating()) {
            return Tri::Unknown;
        }
        if null_facts.all_null() {
            return Tri::False;
        }
        let lower = stat_at(stats, "minValues", path).and_then(|value| self.lower_bound(value));
        let upper = match stat_at(stats, "maxValues", path) {
            Some(value) => self.upper_bound(value),
            None => UpperBound::Unbounded,
        };
        let excluded = match self.op {
            CompareOp::Equal => self.all_above(lower, true) || self.all_below(&upper, true, true),
            CompareOp::NotEqual => {
                self.all_above(lower, false) && self.all_below(&upper, false, false)
            }
            CompareOp::Less => self.all_above(lower, false),
            CompareOp::LessOrEqual => self.all_above(lower, true),
            CompareOp::Greater => self.all_below(&upper, false, false),
            CompareOp::GreaterOrEqual => self.all_below(&upper, true, false),
        };
        if excluded {
            Tri::False
        } else {
            Tri::Unknown
        }
    }

    /// Whether every value is above the literal (`strict`) or at least the literal.
    fn all_above(&self, lower: Option<Datum>, strict: bool) -> bool {
        let Some(lower) = lower else { return false };
        match compare_datums(lower, self.literal) {
            Some(Ordering::Greater) => true,
            Some(Ordering::Equal) => !strict,
            _ => false,
        }
    }

    /// Whether every value is below the literal (`strict`) or at most the literal. A float
    /// `max` is used only for equality (`nan_is_harmless`): NaN equals no number but is above
    /// every number in Spark's ordering, and NaN is not in the stats.
    fn all_below(&self, upper: &UpperBound, strict: bool, nan_is_harmless: bool) -> bool {
        if self.column.value_type.is_floating() && !nan_is_harmless {
            return false;
        }
        match upper {
            UpperBound::Unbounded => false,
            UpperBound::Inclusive(upper) => match compare_datums(*upper, self.literal) {
                Some(Ordering::Less) => true,
                Some(Ordering::Equal) => !strict,
                _ => false,
            },
            UpperBound::TextPrefix(prefix) => match self.literal {
                // Values are below `prefix + 0xFF`; that is at most a literal greater than
                // `prefix` that does not extend it (valid UTF-8 has no 0xFF byte).
                Datum::Text(literal) => literal > *prefix && !literal.starts_with(prefix),
                _ => false,
            },
        }
    }

    fn lower_bound(&self, value: &'a Value) -> Option<Datum<'a>> {
        match self.column.value_type {
            ValueType::Timestamp => {
                let (micros, coarse) = parse_timestamp(value.as_str()?)?;
                let slack = if coarse {
                    TIMESTAMP_STATS_SLACK_MICROS
                } else {
                    0
                };
                Some(Datum::Timestamp(micros.saturating_sub(slack)))
            }
            // A truncated string minimum is a prefix, still a lower bound.
            value_type => stats_datum(value, value_type),
        }
    }

    fn upper_bound(&self, value: &'a Value) -> UpperBound<'a> {
        match self.column.value_type {
            ValueType::String => match value.as_str() {
                Some(text) => UpperBound::TextPrefix(text),
                None => UpperBound::Unbounded,
            },
            ValueType::Timestamp => match value.as_str().and_then(parse_timestamp) {
                Some((micros, coarse)) => {
                    let slack = if coarse {
                        TIMESTAMP_STATS_SLACK_MICROS
                    } else {
                        0
                    };
                    UpperBound::Inclusive(Datum::Timestamp(micros.saturating_add(slack)))
                }
                None => UpperBound::Unbounded,
            },
            value_type => match stats_datum(value, value_type) {
                Some(datum) => UpperBound::Inclusive(datum),
                None => UpperBound::Unbounded,
            },
        }
    }
}

/// A min or max stat as `value_type`; `None` when it does not have that type.
fn stats_datum(value: &Value, value_type: ValueType) -> Option<Datum<'_>> {
    Some(match value_type {
        ValueType::Bool => match value {
            Value::Bool(flag) => Datum::Bool(*flag),
            Value::String(text) => Datum::Bool(parse_bool(text)?),
            _ => return None,
        },
        ValueType::Int | ValueType::Long => Datum::Integer(stats_number(value)?),
        // Round through f32 so the stat and the literal meet in the column's own precision.
        ValueType::Float => Datum::Floating(f64::from(stats_number::<f64>(value)? as f32)),
        ValueType::Double => Datum::Floating(stats_number(value)?),
        ValueType::String => Datum::Text(value.as_str()?),
        ValueType::Date => Datum::Date(parse_date(value.as_str()?)?),
        ValueType::Timestamp => Datum::Timestamp(parse_timestamp(value.as_str()?)?.0),
    })
}

/// A numeric stat: a JSON number, or a string holding one (some writers quote numbers).
fn stats_number<N: StatsNumber>(value: &Value) -> Option<N> {
    match value {
        Value::Number(number) => N::from_number(number),
        Value::String(text) => text.parse().ok(),
        _ => None,
    }
}

trait StatsNumber: std::str::FromStr {
    fn from_number(number: &serde_json::Number) -> Option<Self>;
}

impl StatsNumber for i64 {
    fn from_number(number: &serde_json::Number) -> Option<i64> {
        number.as_i64()
    }
}

impl StatsNumber for f64 {
    fn from_number(number: &serde_json::Number) -> Option<f64> {
        number.as_f64()
    }
}

/// The stat `section` (`minValues`, `maxValues`, `nullCount`) for the column at `path`: a
/// top-level key first, then a dotted path through nested objects.
fn stat_at<'a>(stats: &'a Value, section: &str, path: &str) -> Option<&'a Value> {
    let section = stats.get(section)?;
    if let Some(value) = section.get(path) {
        return Some(value);
    }
    if !path.contains('.') {
        return None;
    }
    path.split('.')
        .try_fold(section, |node, part| node.get(part))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn column(name: &str, value_type: &str) -> Value {
        json!({"op": "column", "name": name, "valueType": value_type})
    }

    fn literal(value: &str, value_type: &str) -> Value {
        json!({"op": "literal", "value": value, "valueType": value_type})
    }

    fn op(name: &str, children: Vec<Value>) -> Value {
        json!({"op": name, "children": children})
    }

    fn compare(name: &str, column_name: &str, value: &str, value_type: &str) -> Value {
        op(
            name,
            vec![column(column_name, value_type), literal(value, value_type)],
        )
    }

    fn parse(tree: &Value) -> Predicate {
        match parse_predicate(&tree.to_string()) {
            Some(predicate) => predicate,
            None => panic!("expected {tree} to parse"),
        }
    }

    /// One file: partition columns with their values, and optional stats.
    #[derive(Default)]
    struct TestFile {
        partition_columns: Vec<String>,
        partition_values: HashMap<String, Option<String>>,
        stats: Option<Value>,
        physical_names: Option<HashMap<String, String>>,
    }

    impl TestFile {
        fn partitions(values: &[(&str, Option<&str>)]) -> TestFile {
            TestFile {
                partition_columns: values.iter().map(|(name, _)| name.to_string()).collect(),
                partition_values: values
                    .iter()
                    .map(|(name, value)| (name.to_string(), value.map(str::to_owned)))
                    .collect(),
                ..TestFile::default()
            }
        }

        /// Data columns with `[min, max]` ranges, no nulls, 10 records.
        fn ranges(ranges: &[(&str, Value, Value)]) -> TestFile {
            let mut min_values = Map::new();
            let mut max_values = Map::new();
            let mut null_count = Map::new();
            for (name, min, max) in ranges {
                min_values.insert(name.to_string(), min.clone());
                max_values.insert(name.to_string(), max.clone());
                null_count.insert(name.to_string(), json!(0));
            }
            TestFile {
                stats: Some(json!({
                    "numRecords": 10,
                    "minValues": min_values,
                    "maxValues": max_values,
                    "nullCount": null_count,
                })),
                ..TestFile::default()
            }
        }

        fn with_stats(self, stats: Value) -> TestFile {
            TestFile {
                stats: Some(stats),
                ..self
            }
        }

        fn eval(&self, predicate: &Predicate) -> Tri {
            let mut facts = FileFacts::new(&self.partition_columns, &self.partition_values)
                .with_stats(self.stats.as_ref());
            if let Some(names) = &self.physical_names {
                facts = facts.with_physical_names(names);
            }
            let outcome = evaluate(predicate, &facts);
            assert_eq!(might_match(predicate, &facts), outcome != Tri::False);
            outcome
        }
    }

    fn range(name: &str, min: Value, max: Value) -> TestFile {
        TestFile::ranges(&[(name, min, max)])
    }

    // ---- parsing -------------------------------------------------------------------------

    #[test]
    fn predicate_parses_the_protocol_example() {
        let text = r#"{"op":"and","children":[{"op":"not","children":[{"op":"isNull","children":
            [{"op":"column","name":"birthday","valueType":"date"}]}]},{"op":"equal","children":
            [{"op":"column","name":"birthday","valueType":"date"},
            {"op":"literal","value":"2020-01-01","valueType":"date"}]}]}"#;
        let predicate = parse_predicate(text).expect("the protocol example parses");
        let file = TestFile::partitions(&[("birthday", Some("2020-01-01"))]);
        assert_eq!(file.eval(&predicate), Tri::True);
        let file = TestFile::partitions(&[("birthday", Some("2020-01-02"))]);
        assert_eq!(file.eval(&predicate), Tri::False);
        let file = TestFile::partitions(&[("birthday", None)]);
        assert_eq!(file.eval(&predicate), Tri::False);
    }

    #[test]
    fn predicate_malformed_inputs_filter_nothing() {
        let refused = [
            "".to_owned(),
            "   ".to_owned(),
            "not json".to_owned(),
            "[]".to_owned(),
            "{}".to_owned(),
            r#"{"op":"like","children":[]}"#.to_owned(),
            r#"{"op":"equal"}"#.to_owned(),
            compare("equal", "a", "1", "decimal").to_string(),
            // Type mismatch between the children.
            op("equal", vec![column("a", "date"), literal("24", "int")]).to_string(),
            op("equal", vec![column("a", "int"), literal("1", "long")]).to_string(),
            // Wrong arity.
            op("equal", vec![column("a", "int")]).to_string(),
            op(
                "lessThan",
                vec![column("a", "int"), literal("1", "int"), literal("2", "int")],
            )
            .to_string(),
            op("not", vec![]).to_string(),
            op(
                "not",
                vec![literal("true", "bool"), literal("true", "bool")],
            )
            .to_string(),
            op("and", vec![compare("equal", "a", "1", "int")]).to_string(),
            op("or", vec![]).to_string(),
            op("isNull", vec![]).to_string(),
            // Children of comparisons and isNull must be leaves.
            op("isNull", vec![compare("equal", "a", "1", "int")]).to_string(),
            op(
                "equal",
                vec![compare("equal", "a", "1", "int"), literal("true", "bool")],
            )
            .to_string(),
            // Literals that do not parse as their type.
            compare("equal", "a", "foo", "bool").to_string(),
            compare("equal", "a", "2147483648", "int").to_string(),
            compare("equal", "a", "1.5", "long").to_string(),
            compare("equal", "a", "2021-13-01", "date").to_string(),
            compare("equal", "a", "2021-04-29T00:00:00Z", "date").to_string(),
            compare("equal", "a", "2023-06-07 17:03.234", "timestamp").to_string(),
            compare("equal", "a", "foo", "timestamp").to_string(),
            compare("equal", "a", "2023-06-07T17:03:00", "timestamp").to_string(),
            compare("equal", "a", "x", "float").to_string(),
            // Missing name or value.
            json!({"op":"equal","children":[{"op":"column","valueType":"int"},
                {"op":"literal","value":"1","valueType":"int"}]})
            .to_string(),
            json!({"op":"equal","children":[{"op":"column","name":"a","valueType":"int"},
                {"op":"literal","value":null,"valueType":"int"}]})
            .to_string(),
            json!({"op":"equal","children":[{"op":"column","name":"a"},
                {"op":"literal","value":"1"}]})
            .to_string(),
        ];
        for text in &refused {
            assert!(
                parse_predicate(text).is_none(),
                "expected {text} to be refused"
            );
        }
    }

    #[test]
    fn predicate_accepts_every_value_type() {
        let cases = [
            ("bool", "true"),
            ("int", "-7"),
            ("long", "9007199254740993"),
            ("string", "anything at all"),
            ("date", "2021-4-9"),
            ("float", "5.2"),
            ("double", "-1e300"),
            ("timestamp", "2021-04-28T23:33:57.955Z"),
            ("timestamp", "2021-04-28T23:33:57+02:00"),
        ];
        for (value_type, value) in cases {
            let text = compare("equal", "a", value, value_type).to_string();
            assert!(parse_predicate(&text).is_some(), "{value_type} {value}");
        }
    }

    #[test]
    fn predicate_text_over_one_mebibyte_is_refused() {
        let long = "x".repeat(PREDICATE_TEXT_BYTES_MAX);
        let text = compare("equal", "a", &long, "string").to_string();
        assert!(text.len() > PREDICATE_TEXT_BYTES_MAX);
        assert!(parse_predicate(&text).is_none());
        let short = "x".repeat(PREDICATE_TEXT_BYTES_MAX - 200);
        assert!(parse_predicate(&compare("equal", "a", &short, "string").to_string()).is_some());
    }

    fn nots_around(levels: usize, leaf: Value) -> Value {
        (0..levels).fold(leaf, |tree, _| op("not", vec![tree]))
    }

    #[test]
    fn predicate_depth_limit_is_one_hundred_levels() {
        // Built in memory, so serde_json's own nesting limit is not involved.
        let deepest = nots_around(PREDICATE_DEPTH_MAX - 2, compare("equal", "a", "1", "int"));
        assert!(parse_node(&deepest, 1, false).is_some());
        let too_deep = op("not", vec![deepest]);
        assert!(parse_node(&too_deep, 1, false).is_none());
        let leaf_too_deep = nots_around(PREDICATE_DEPTH_MAX, literal("true", "bool"));
        assert!(parse_node(&leaf_too_deep, 1, false).is_none());
        let leaf_deepest = nots_around(PREDICATE_DEPTH_MAX - 1, literal("true", "bool"));
        assert!(parse_node(&leaf_deepest, 1, false).is_some());
    }

    #[test]
    fn predicate_depth_from_text() {
        // 63 `not`s around a literal nest JSON 127 deep: within serde_json's limit.
        let parsed = parse_predicate(&nots_around(63, literal("true", "bool")).to_string());
        let file = TestFile::default();
        assert_eq!(file.eval(&parsed.expect("63 levels parse")), Tri::False);
        let text = nots_around(PREDICATE_DEPTH_MAX + 1, literal("true", "bool")).to_string();
        assert!(parse_predicate(&text).is_none());
        // Deeply nested garbage is refused without exhausting the stack.
        let brackets = "[".repeat(100_000);
        assert!(parse_predicate(&brackets).is_none());
    }

    #[test]
    fn predicate_ignores_unknown_fields_and_accepts_unquoted_literals() {
        let tree = json!({"op":"equal","extra":1,"children":[
            {"op":"column","name":"a","valueType":"int","children":[]},
            {"op":"literal","value":25,"valueType":"int"}]});
        let predicate = parse(&tree);
        assert_eq!(
            TestFile::partitions(&[("a", Some("25"))]).eval(&predicate),
            Tri::True
        );
        assert_eq!(
            TestFile::partitions(&[("a", Some("24"))]).eval(&predicate),
            Tri::False
        );
    }

    // ---- reference evaluator cases (V2 suite), with our stricter three-valued answers ----

    #[test]
    fn literal_and_column_as_predicates() {
        let empty = TestFile::default();
        assert_eq!(empty.eval(&parse(&literal("true", "bool"))), Tri::True);
        assert_eq!(empty.eval(&parse(&literal("false", "bool"))), Tri::False);
        assert_eq!(empty.eval(&parse(&literal("foo", "string"))), Tri::Unknown);
        assert_eq!(empty.eval(&parse(&literal("1", "int"))), Tri::Unknown);
        assert_eq!(empty.eval(&parse(&literal("1.0", "float"))), Tri::Unknown);
        assert_eq!(
            empty.eval(&parse(&op("not", vec![literal("true", "bool")]))),
            Tri::False
        );
        assert_eq!(
            empty.eval(&parse(&op("not", vec![literal("false", "bool")]))),
            Tri::True
        );

        let date = TestFile::partitions(&[("date", Some("2023-05-23"))]);
        let equal = compare("equal", "date", "2023-05-23", "date");
        let with_true = op("and", vec![equal.clone(), literal("true", "bool")]);
        assert_eq!(date.eval(&parse(&with_true)), Tri::True);
        let with_false = op("and", vec![equal, literal("false", "bool")]);
        assert_eq!(date.eval(&parse(&with_false)), Tri::False);

        let bool_column = parse(&column("A", "bool"));
        assert_eq!(
            TestFile::partitions(&[("A", Some("true"))]).eval(&bool_column),
            Tri::True
        );
        assert_eq!(
            TestFile::partitions(&[("A", Some("false"))]).eval(&bool_column),
            Tri::False
        );
        assert_eq!(
            TestFile::partitions(&[("A", Some("foo"))]).eval(&bool_column),
            Tri::Unknown
        );
        assert_eq!(
            TestFile::partitions(&[("B", Some("true"))]).eval(&bool_column),
            Tri::Unknown
        );
        assert_eq!(empty.eval(&bool_column), Tri::Unknown);
        let int_column = parse(&column("A", "int"));
        assert_eq!(
            TestFile::partitions(&[("A", Some("1"))]).eval(&int_column),
            Tri::Unknown
        );

        assert_eq!(
            range("A", json!(true), json!(true)).eval(&bool_column),
            Tri::Unknown
        );
        assert_eq!(
            range("A", json!(false), json!(true)).eval(&bool_column),
            Tri::Unknown
        );
        assert_eq!(
            range("A", json!(false), json!(false)).eval(&bool_column),
            Tri::False
        );
        assert_eq!(
            range("A", json!("X"), json!("Y")).eval(&bool_column),
            Tri::Unknown
        );
        let not_column = parse(&op("not", vec![column("A", "bool")]));
        assert_eq!(
            range("A", json!(true), json!(true)).eval(&not_column),
            Tri::False
        );
        assert_eq!(
            range("A", json!(false), json!(true)).eval(&not_column),
            Tri::Unknown
        );
        assert_eq!(
            TestFile::partitions(&[("A", Some("true"))]).eval(&not_column),
            Tri::False
        );
        assert_eq!(
            TestFile::partitions(&[("A", Some("FALSE"))]).eval(&not_column),
            Tri::True
        );
    }

    #[test]
    fn equal_on_dates() {
        let predicate = parse(&compare("equal", "A", "2021-04-29", "date"));
        assert_eq!(
            TestFile::partitions(&[("A", Some("2021-04-29"))]).eval(&predicate),
            Tri::True
        );
        assert_eq!(
            TestFile::partitions(&[("A", Some("2021-04-28"))]).eval(&predicate),
            Tri::False
        );
        assert_eq!(
            TestFile::partitions(&[("A", Some("2021-05-02"))]).eval(&predicate),
            Tri::False
        );
        for (min, max) in [
            ("2021-04-27", "2021-04-29"),
            ("2021-04-29", "2021-04-29"),
            ("2021-04-29", "2021-04-30"),
            ("2021-04-27", "2021-05-01"),
        ] {
            assert_eq!(
                range("A", json!(min), json!(max)).eval(&predicate),
                Tri::Unknown
            );
        }
        for (min, max) in [("2021-04-27", "2021-04-28"), ("2021-04-30", "2021-05-28")] {
            assert_eq!(
                range("A", json!(min), json!(max)).eval(&predicate),
                Tri::False
            );
        }
        // A bool comparison on date values cannot be decided.
        let as_bool = parse(&compare("equal", "A", "true", "bool"));
        assert_eq!(
            TestFile::partitions(&[("A", Some("2021-04-28"))]).eval(&as_bool),
            Tri::Unknown
        );
        let file = range("A", json!("2021-04-27"), json!("2021-04-28"));
        assert_eq!(file.eval(&as_bool), Tri::Unknown);
        assert_eq!(TestFile::default().eval(&predicate), Tri::Unknown);
    }

    #[test]
    fn less_than_on_dates() {
        let predicate = parse(&compare("lessThan", "A", "2021-04-29", "date"));
        assert_eq!(
            TestFile::partitions(&[("A", Some("2021-04-28"))]).eval(&predicate),
            Tri::True
        );
        assert_eq!(
            TestFile::partitions(&[("A", Some("2021-04-29"))]).eval(&predicate),
            Tri::False
        );
        assert_eq!(
            TestFile::partitions(&[("A", Some("2021-05-02"))]).eval(&predicate),
            Tri::False
        );
        for (min, max) in [
            ("2021-01-21", "2021-04-28"),
            ("2021-04-27", "2021-04-27"),
            ("2021-04-26", "2021-04-29"),
            ("2021-04-28", "2021-05-01"),
        ] {
            assert_eq!(
                range("A", json!(min), json!(max)).eval(&predicate),
                Tri::Unknown
            );
        }
        for (min, max) in [("2021-04-29", "2021-04-30"), ("2021-04-30", "2021-05-28")] {
            assert_eq!(
                range("A", json!(min), json!(max)).eval(&predicate),
                Tri::False
            );
        }
        // Literal on the left: 2021-04-29 < A means A > 2021-04-29.
        let swapped = parse(&op(
            "lessThan",
            vec![literal("2021-04-29", "date"), column("A", "date")],
        ));
        assert_eq!(
            TestFile::partitions(&[("A", Some("2021-04-30"))]).eval(&swapped),
            Tri::True
        );
        assert_eq!(
            TestFile::partitions(&[("A", Some("2021-04-29"))]).eval(&swapped),
            Tri::False
        );
        let file = range("A", json!("2021-04-01"), json!("2021-04-29"));
        assert_eq!(file.eval(&swapped), Tri::False);
    }

    #[test]
    fn less_than_or_equal_on_floats_and_doubles() {
        let float = parse(&compare("lessThanOrEqual", "A", "5.2", "float"));
        assert_eq!(
            TestFile::partitions(&[("A", Some("5.2"))]).eval(&float),
            Tri::True
        );
        assert_eq!(
            TestFile::partitions(&[("A", Some("5.21"))]).eval(&float),
            Tri::False
        );
        for (min, max) in [(0.0, 200.0), (0.0, 5.2), (5.2, 100.0), (4.1, 5.21)] {
            assert_eq!(
                range("A", json!(min), json!(max)).eval(&float),
                Tri::Unknown
            );
        }
        assert_eq!(
            range("A", json!(5.21), json!(10.0)).eval(&float),
            Tri::False
        );
        // A float column's stats hold the f32 value printed shortest: 5.2 must match 5.2.
        assert_eq!(
            range("A", json!(5.2), json!(6.0)).eval(&float),
            Tri::Unknown
        );

        let double = parse(&compare("lessThanOrEqual", "A", "5.2", "double"));
        assert_eq!(
            TestFile::partitions(&[("A", Some("100.0"))]).eval(&double),
            Tri::False
        );
        assert_eq!(
            range("A", json!(5.21), json!(10.0)).eval(&double),
            Tri::False
        );
        assert_eq!(
            range("A", json!("100.0"), json!("200.0")).eval(&double),
            Tri::False
        );
        assert_eq!(
            range("A", json!("NaN"), json!("NaN")).eval(&double),
            Tri::Unknown
        );
    }

    #[test]
    fn float_max_never_excludes_greater_than_because_of_nan() {
        let greater = parse(&compare("greaterThan", "A", "100", "double"));
        assert_eq!(
            range("A", json!(1.0), json!(10.0)).eval(&greater),
            Tri::Unknown
        );
        // ...but equality is still excluded on both sides, and less-than by the minimum.
        let equal = parse(&compare("equal", "A", "100", "double"));
        assert_eq!(range("A", json!(1.0), json!(10.0)).eval(&equal), Tri::False);
        let less = parse(&compare("lessThan", "A", "0.5", "double"));
        assert_eq!(range("A", json!(1.0), json!(10.0)).eval(&less), Tri::False);
        // NaN literals decide nothing.
        let nan = parse(&compare("equal", "A", "NaN", "double"));
        assert_eq!(range("A", json!(1.0), json!(10.0)).eval(&nan), Tri::Unknown);
        assert_eq!(
            TestFile::partitions(&[("A", Some("NaN"))]).eval(&equal),
            Tri::Unknown
        );
    }

    #[test]
    fn timestamps_compare_as_instants() {
        let greater = parse(&compare(
            "greaterThan",
            "A",
            "2023-06-10T00:00:00.000Z",
            "timestamp",
        ));
        for (min, max) in [
            ("2023-06-07T04:27:03.234Z", "2023-07-07T00:00:00.000Z"),
            ("2023-06-10T00:00:00.000Z", "2023-06-10T00:00:00.001Z"),
            // Millisecond stats may hide up to a millisecond more.
            ("2023-06-09T00:00:00.000Z", "2023-06-10T00:00:00.000Z"),
        ] {
            assert_eq!(
                range("A", json!(min), json!(max)).eval(&greater),
                Tri::Unknown
            );
        }
        let file = range(
            "A",
            json!("2023-06-09T00:00:00.000Z"),
            json!("2023-06-09T23:59:59.998Z"),
        );
        assert_eq!(file.eval(&greater), Tri::False);
        // Microsecond stats are exact.
        let file = range(
            "A",
            json!("2023-06-09T00:00:00.000000Z"),
            json!("2023-06-10T00:00:00.000000Z"),
        );
        assert_eq!(file.eval(&greater), Tri::False);

        let at_least = parse(&compare(
            "greaterThanOrEqual",
            "A",
            "2023-09-10T00:00:00.010Z",
            "timestamp",
        ));
        for (min, max) in [
            ("2023-06-07T04:27:03.234Z", "2023-07-07T00:00:00.000Z"),
            ("2023-06-10T00:00:00.000Z", "2023-09-10T00:00:00.000Z"),
        ] {
            assert_eq!(
                range("A", json!(min), json!(max)).eval(&at_least),
                Tri::False
            );
        }
        // Offsets are honoured: 02:00+02:00 is midnight UTC.
        let equal = parse(&compare(
            "equal",
            "A",
            "2023-06-10T02:00:00+02:00",
            "timestamp",
        ));
        let file = range(
            "A",
            json!("2023-06-10T00:00:00.000Z"),
            json!("2023-06-10T00:00:00Z"),
        );
        assert_eq!(file.eval(&equal), Tri::Unknown);
        let file = range(
            "A",
            json!("2023-06-10T00:00:01.000Z"),
            json!("2023-06-11T00:00:00Z"),
        );
        assert_eq!(file.eval(&equal), Tri::False);
        // Partition timestamps: exact with an offset, undecided without one.
        let iso = TestFile::partitions(&[("A", Some("2023-06-10T00:00:00Z"))]);
        assert_eq!(iso.eval(&equal), Tri::True);
        let local = TestFile::partitions(&[("A", Some("2023-06-10 00:00:00"))]);
        assert_eq!(local.eval(&equal), Tri::Unknown);
    }

    fn and_op() -> Value {
        op(
            "and",
            vec![
                compare("equal", "A", "1", "int"),
                compare("lessThan", "B", "25", "long"),
            ],
        )
    }

    #[test]
    fn and_on_partitions_and_stats() {
        let predicate = parse(&and_op());
        let part = |a: &str, b: &str| TestFile::partitions(&[("A", Some(a)), ("B", Some(b))]);
        let stats = |a: (Value, Value), b: (Value, Value)| {
            TestFile::ranges(&[("A", a.0, a.1), ("B", b.0, b.1)])
        };
        assert_eq!(part("1", "2").eval(&predicate), Tri::True);
        assert_eq!(part("1", "24").eval(&predicate), Tri::True);
        assert_eq!(
            stats((json!(0), json!(1)), (json!(2), json!(26))).eval(&predicate),
            Tri::Unknown
        );
        for file in [
            part("2", "2"),
            part("1", "28"),
            part("2", "28"),
            stats((json!(2), json!(10)), (json!(2), json!(100))),
            stats((json!(0), json!(10)), (json!(26), json!(100))),
            // One child is False, so errors in the other do not matter.
            part("2", "foo"),
            part("foo", "28"),
            stats((json!(2), json!(10)), (json!("aa"), json!("zz"))),
            stats((json!("a"), json!("b")), (json!(26), json!(100))),
        ] {
            assert_eq!(file.eval(&predicate), Tri::False);
        }
        for file in [
            part("1", "foo"),
            part("foo", "24"),
            part("foo", "bar"),
            stats((json!(0), json!(10)), (json!("aa"), json!("zz"))),
            stats((json!("a"), json!("b")), (json!(-1), json!(100))),
        ] {
            assert_eq!(file.eval(&predicate), Tri::Unknown);
        }
    }

    #[test]
    fn or_on_partitions_and_stats() {
        let predicate = parse(&op(
            "or",
            vec![
                compare("equal", "A", "1", "int"),
                compare("greaterThan", "B", "25", "long"),
            ],
        ));
        let part = |a: &str, b: &str| TestFile::partitions(&[("A", Some(a)), ("B", Some(b))]);
        let stats = |a: (i64, i64), b: (i64, i64)| {
            TestFile::ranges(&[("A", json!(a.0), json!(a.1)), ("B", json!(b.0), json!(b.1))])
        };
        for file in [
            part("1", "24"),
            part("2", "26"),
            part("1", "26"),
            part("1", "foo"),
        ] {
            assert_eq!(file.eval(&predicate), Tri::True);
        }
        assert_eq!(part("foo", "28").eval(&predicate), Tri::True);
        assert_eq!(part("2", "2").eval(&predicate), Tri::False);
        assert_eq!(stats((2, 10), (-100, 24)).eval(&predicate), Tri::False);
        assert_eq!(stats((2, 10), (-100, 25)).eval(&predicate), Tri::False);
        assert_eq!(stats((0, 1), (2, 24)).eval(&predicate), Tri::Unknown);
        assert_eq!(stats((-10, -1), (-1, 100)).eval(&predicate), Tri::Unknown);
        for file in [part("2", "foo"), part("foo", "24"), part("foo", "bar")] {
            assert_eq!(file.eval(&predicate), Tri::Unknown);
        }
    }

    #[test]
    fn not_is_pushed_down_and_never_inverts_unknown() {
        let predicate = parse(&op(
            "not",
            vec![compare("greaterThanOrEqual", "A", "7", "int")],
        ));
        assert_eq!(
            TestFile::partitions(&[("A", Some("1"))]).eval(&predicate),
            Tri::True
        );
        assert_eq!(
            TestFile::partitions(&[("A", Some("7"))]).eval(&predicate),
            Tri::False
        );
        assert_eq!(
            range("A", json!(2), json!(5)).eval(&predicate),
            Tri::Unknown
        );
        // The reference V2 evaluator drops this file; it holds A = 2, which is below 7.
        assert_eq!(
            range("A", json!(2), json!(10)).eval(&predicate),
            Tri::Unknown
        );
        assert_eq!(range("A", json!(7), json!(10)).eval(&predicate), Tri::False);
        assert_eq!(
            TestFile::partitions(&[("A", Some("foo"))]).eval(&predicate),
            Tri::Unknown
        );
        assert_eq!(
            TestFile::partitions(&[("B", Some("1"))]).eval(&predicate),
            Tri::Unknown
        );
        assert_eq!(
            range("A", json!("aa"), json!("bb")).eval(&predicate),
            Tri::Unknown
        );
        assert_eq!(
            range("B", json!(1), json!(7)).eval(&predicate),
            Tri::Unknown
        );
    }

    #[test]
    fn not_equal_on_a_range_keeps_the_file() {
        let predicate = parse(&op("not", vec![compare("equal", "x", "5", "long")]));
        assert_eq!(
            range("x", json!(1), json!(10)).eval(&predicate),
            Tri::Unknown
        );
        assert_eq!(range("x", json!(5), json!(5)).eval(&predicate), Tri::False);
        // With NULLs present a NOT may hold for them (dataframe semantics): keep.
        let file = TestFile::default().with_stats(json!({
            "numRecords": 3, "minValues": {"x": 5}, "maxValues": {"x": 5}, "nullCount": {"x": 1}
        }));
        assert_eq!(file.eval(&predicate), Tri::Unknown);
        // Without nullCount nothing proves the absence of NULLs.
        let file = TestFile::default().with_stats(json!({
            "numRecords": 3, "minValues": {"x": 5}, "maxValues": {"x": 5}
        }));
        assert_eq!(file.eval(&predicate), Tri::Unknown);
    }

    #[test]
    fn de_morgan_through_nested_nots() {
        let inner = op(
            "or",
            vec![
                compare("equal", "A", "1", "int"),
                compare("lessThan", "B", "25", "long"),
            ],
        );
        // not(or(A = 1, B < 25)) = and(A != 1, B >= 25).
        let predicate = parse(&op("not", vec![inner.clone()]));
        let file = TestFile::ranges(&[("A", json!(0), json!(9)), ("B", json!(0), json!(24))]);
        assert_eq!(file.eval(&predicate), Tri::False);
        let file = TestFile::ranges(&[("A", json!(0), json!(9)), ("B", json!(0), json!(25))]);
        assert_eq!(file.eval(&predicate), Tri::Unknown);
        // not(not(x)) is x.
        let twice = parse(&op("not", vec![op("not", vec![inner])]));
        let file = TestFile::ranges(&[("A", json!(2), json!(9)), ("B", json!(25), json!(30))]);
        assert_eq!(file.eval(&twice), Tri::False);
    }

    #[test]
    fn combinations_from_the_reference_suite() {
        let equal = compare("equal", "A", "1", "int");
        let less = compare("lessThan", "B", "25", "long");
        let less_or_equal = compare("lessThanOrEqual", "B", "25", "long");
        let greater = compare("greaterThan", "C", "foo", "string");
        let greater_or_equal = compare("greaterThanOrEqual", "C", "foo", "string");
        let names = ["A", "B", "C"];
        let part = |values: &[(&str, &str)]| {
            let mut file = TestFile::partitions(&[]);
            file.partition_columns = names.iter().map(|name| name.to_string()).collect();
            for (name, value) in values {
                file.partition_values
                    .insert(name.to_string(), Some(value.to_string()));
            }
            file
        };

        let not_and = op(
            "not",
            vec![op("and", vec![equal.clone(), less_or_equal.clone()])],
        );
        let predicate = parse(&not_and);
        assert_eq!(
            part(&[("A", "1"), ("B", "25")]).eval(&predicate),
            Tri::False
        );
        assert_eq!(
            part(&[("A", "1"), ("B", "100")]).eval(&predicate),
            Tri::True
        );
        assert_eq!(part(&[("A", "0")]).eval(&predicate), Tri::True);
        assert_eq!(part(&[("A", "1")]).eval(&predicate), Tri::Unknown);
        assert_eq!(part(&[]).eval(&predicate), Tri::Unknown);

        let and_not_and = parse(&op(
            "and",
            vec![not_and.clone(), equal.clone(), greater_or_equal.clone()],
        ));
        assert_eq!(
            part(&[("A", "1"), ("B", "10"), ("C", "zz")]).eval(&and_not_and),
            Tri::False
        );
        for file in [
            part(&[("A", "1"), ("C", "zz")]),
            part(&[("A", "1")]),
            part(&[]),
        ] {
            assert_eq!(file.eval(&and_not_and), Tri::Unknown);
        }

        let or_not_and = parse(&op("or", vec![not_and, less.clone(), greater_or_equal]));
        for file in [
            part(&[("A", "1"), ("B", "100"), ("C", "aa")]),
            part(&[("A", "1"), ("C", "zz")]),
            part(&[("A", "0")]),
        ] {
            assert_eq!(file.eval(&or_not_and), Tri::True);
        }
        for file in [
            part(&[("A", "1"), ("C", "aa")]),
            part(&[("A", "1")]),
            part(&[]),
        ] {
            assert_eq!(file.eval(&or_not_and), Tri::Unknown);
        }

        let and_not_or = parse(&op(
            "and",
            vec![op("not", vec![op("or", vec![equal, less])]), greater],
        ));
        for file in [part(&[("A", "0"), ("C", "aa")]), part(&[("A", "1")])] {
            assert_eq!(file.eval(&and_not_or), Tri::False);
        }
        for file in [
            part(&[("A", "0"), ("C", "zz")]),
            part(&[("A", "0")]),
            part(&[]),
        ] {
            assert_eq!(file.eval(&and_not_or), Tri::Unknown);
        }
    }

    #[test]
    fn stress_inputs_from_the_reference_suite() {
        let predicate = parse(&op(
            "and",
            vec![
                compare("greaterThan", "date", "2021-04-29", "date"),
                compare("lessThan", "date", "2021-05-29", "date"),
            ],
        ));
        let partition_cases = [
            ("2021-04-28", false),
            ("2021-04-29", false),
            ("2021-04-30", true),
            ("2021-05-01", true),
            ("2021-05-04", true),
            ("2021-05-30", false),
            ("2021-06-01", false),
        ];
        for (value, expected) in partition_cases {
            let file = TestFile::partitions(&[("date", Some(value))]);
            assert_eq!(file.eval(&predicate), Tri::from_bool(expected), "{value}");
        }
        let stats_cases = [
            (("2021-04-28", "2021-04-29"), false),
            (("2021-04-29", "2021-04-30"), true),
            (("2021-05-04", "2021-05-30"), true),
            (("2021-05-30", "2021-05-31"), false),
            (("2021-06-01", "2021-06-10"), false),
        ];
        for ((min, max), kept) in stats_cases {
            let file = range("date", json!(min), json!(max));
            assert_eq!(file.eval(&predicate) != Tri::False, kept, "{min}..{max}");
        }
    }

    // ---- nulls ---------------------------------------------------------------------------

    #[test]
    fn is_null_on_partitions() {
        let is_null = parse(&op("isNull", vec![column("p", "string")]));
        let is_not_null = parse(&op("not", vec![op("isNull", vec![column("p", "string")])]));
        for (value, null) in [(Some("foo"), false), (None, true), (Some(""), true)] {
            let file = TestFile::partitions(&[("p", value)]);
            assert_eq!(file.eval(&is_null), Tri::from_bool(null));
            assert_eq!(file.eval(&is_not_null), Tri::from_bool(!null));
        }
        let missing = TestFile {
            partition_columns: vec!["p".into()],
            ..TestFile::default()
        };
        assert_eq!(missing.eval(&is_null), Tri::Unknown);
        let literal_is_null = parse(&op("isNull", vec![literal("1", "int")]));
        assert_eq!(missing.eval(&literal_is_null), Tri::False);
    }

    #[test]
    fn comparisons_with_null_partitions() {
        let equal = parse(&compare("equal", "p", "5", "int"));
        let not_equal = parse(&op("not", vec![compare("equal", "p", "5", "int")]));
        for value in [None, Some("")] {
            let file = TestFile::partitions(&[("p", value)]);
            // NULL = 5 holds for no row; NOT (NULL = 5) may hold in dataframe semantics.
            assert_eq!(file.eval(&equal), Tri::False);
            assert_eq!(file.eval(&not_equal), Tri::Unknown);
        }
        let file = TestFile::partitions(&[("p", Some("5"))]);
        assert_eq!(file.eval(&not_equal), Tri::False);
    }

    #[test]
    fn is_null_on_stats_uses_null_count() {
        let is_null = parse(&op("isNull", vec![column("x", "long")]));
        let is_not_null = parse(&op("not", vec![op("isNull", vec![column("x", "long")])]));
        let stats = |records: u64, nulls: u64| {
            TestFile::default()
                .with_stats(json!({"numRecords": records, "nullCount": {"x": nulls}}))
        };
        assert_eq!(stats(10, 0).eval(&is_null), Tri::False);
        assert_eq!(stats(10, 0).eval(&is_not_null), Tri::True);
        assert_eq!(stats(10, 10).eval(&is_null), Tri::True);
        assert_eq!(stats(10, 10).eval(&is_not_null), Tri::False);
        assert_eq!(stats(10, 3).eval(&is_null), Tri::Unknown);
        assert_eq!(stats(10, 3).eval(&is_not_null), Tri::Unknown);
        assert_eq!(stats(0, 0).eval(&is_null), Tri::False);
        assert_eq!(stats(0, 0).eval(&is_not_null), Tri::False);
        // Present min/max say nothing about nulls: the reference answers False here.
        let file = TestFile::default()
            .with_stats(json!({"numRecords": 10, "minValues": {"x": 1}, "maxValues": {"x": 2}}));
        assert_eq!(file.eval(&is_null), Tri::Unknown);
        assert_eq!(TestFile::default().eval(&is_null), Tri::Unknown);
        // NaN is not counted in nullCount but is missing data to pandas.
        let double_null = parse(&op("isNull", vec![column("f", "double")]));
        let file = TestFile::default().with_stats(json!({"numRecords": 10, "nullCount": {"f": 0}}));
        assert_eq!(file.eval(&double_null), Tri::Unknown);
    }

    #[test]
    fn comparisons_on_all_null_columns() {
        let file = TestFile::default().with_stats(json!({
            "numRecords": 4, "minValues": {}, "maxValues": {}, "nullCount": {"x": 4}
        }));
        assert_eq!(
            file.eval(&parse(&compare("equal", "x", "1", "long"))),
            Tri::False
        );
        assert_eq!(
            file.eval(&parse(&compare("lessThan", "x", "1", "long"))),
            Tri::False
        );
        let negated = parse(&op("not", vec![compare("lessThan", "x", "1", "long")]));
        assert_eq!(file.eval(&negated), Tri::Unknown);
    }

    #[test]
    fn empty_files_match_nothing() {
        let file = TestFile::default().with_stats(json!({"numRecords": 0}));
        assert_eq!(
            file.eval(&parse(&compare("equal", "x", "1", "long"))),
            Tri::False
        );
        let negated = parse(&op("not", vec![compare("equal", "x", "1", "long")]));
        assert_eq!(file.eval(&negated), Tri::False);
    }

    // ---- strings ------------------------------------------------------------------------

    #[test]
    fn truncated_string_max_is_a_prefix_bound() {
        // The real maximum may be "abcz": the stat is its truncated prefix.
        let file = range("s", json!("aaa"), json!("abc"));
        let kept = ["abc", "abcd", "abc\u{10FFFF}", "ab"];
        for value in kept {
            let greater = parse(&compare("greaterThan", "s", value, "string"));
            assert_ne!(file.eval(&greater), Tri::False, "s > {value}");
            let equal = parse(&compare("equal", "s", value, "string"));
            assert_ne!(file.eval(&equal), Tri::False, "s = {value}");
        }
        for value in ["abd", "b", "\u{e9}"] {
            let greater = parse(&compare("greaterThanOrEqual", "s", value, "string"));
            assert_eq!(file.eval(&greater), Tri::False, "s >= {value}");
            let equal = parse(&compare("equal", "s", value, "string"));
            assert_eq!(file.eval(&equal), Tri::False, "s = {value}");
        }
        // The minimum is a lower bound even when truncated.
        assert_eq!(
            file.eval(&parse(&compare("lessThan", "s", "aaa", "string"))),
            Tri::False
        );
        assert_eq!(
            file.eval(&parse(&compare("equal", "s", "a", "string"))),
            Tri::False
        );
        let at_most = parse(&compare("lessThanOrEqual", "s", "aaa", "string"));
        assert_eq!(file.eval(&at_most), Tri::Unknown);
        // Strings compare as UTF-8 bytes: "é" (0xC3 0xA9) sorts after "z".
        let accented = range("s", json!("z"), json!("\u{e9}"));
        assert_eq!(
            accented.eval(&parse(&compare("lessThan", "s", "z", "string"))),
            Tri::False
        );
    }

    #[test]
    fn string_partition_values_compare_exactly() {
        let file = TestFile::partitions(&[("q", Some("abc"))]);
        assert_eq!(
            file.eval(&parse(&compare("equal", "q", "abc", "string"))),
            Tri::True
        );
        assert_eq!(
            file.eval(&parse(&compare("greaterThan", "q", "abc", "string"))),
            Tri::False
        );
        assert_eq!(
            file.eval(&parse(&compare("lessThan", "q", "abd", "string"))),
            Tri::True
        );
    }

    // ---- mixed, column mapping, nested ---------------------------------------------------

    #[test]
    fn partition_and_stats_mixed() {
        let predicate = parse(&op(
            "and",
            vec![
                compare("equal", "date", "2021-04-28", "date"),
                compare("lessThan", "age", "20", "int"),
            ],
        ));
        let file = |date: &str, age: (i64, i64)| {
            let mut file = TestFile::partitions(&[("date", Some(date))]);
            file.stats = range("age", json!(age.0), json!(age.1)).stats;
            file
        };
        assert_eq!(file("2021-04-28", (10, 30)).eval(&predicate), Tri::Unknown);
        assert_eq!(file("2021-04-29", (10, 30)).eval(&predicate), Tri::False);
        assert_eq!(file("2021-04-28", (20, 30)).eval(&predicate), Tri::False);
        let or = parse(&op(
            "or",
            vec![
                compare("equal", "date", "2021-04-28", "date"),
                compare("lessThan", "age", "20", "int"),
            ],
        ));
        assert_eq!(file("2021-04-28", (20, 30)).eval(&or), Tri::True);
        assert_eq!(file("2021-04-29", (20, 30)).eval(&or), Tri::False);
        assert_eq!(file("2021-04-29", (19, 30)).eval(&or), Tri::Unknown);
    }

    #[test]
    fn column_mapping_uses_physical_names() {
        let predicate = parse(&op(
            "and",
            vec![
                compare("equal", "country", "nl", "string"),
                compare("greaterThan", "amount", "100", "long"),
            ],
        ));
        let names: HashMap<String, String> = [
            ("country".to_owned(), "col-1a".to_owned()),
            ("amount".to_owned(), "col-2b".to_owned()),
        ]
        .into();
        let file = |country: &str, max: i64| TestFile {
            partition_columns: vec!["country".into()],
            partition_values: [("col-1a".to_owned(), Some(country.to_owned()))].into(),
            stats: Some(json!({
                "numRecords": 5,
                "minValues": {"col-2b": 0}, "maxValues": {"col-2b": max},
                "nullCount": {"col-2b": 0},
            })),
            physical_names: Some(names.clone()),
        };
        assert_eq!(file("nl", 500).eval(&predicate), Tri::Unknown);
        assert_eq!(file("be", 500).eval(&predicate), Tri::False);
        assert_eq!(file("nl", 100).eval(&predicate), Tri::False);
        // Without the map the logical names find nothing: undecided, never dropped.
        let mut unmapped = file("be", 100);
        unmapped.physical_names = None;
        assert_eq!(unmapped.eval(&predicate), Tri::Unknown);
    }

    #[test]
    fn nested_columns_use_dotted_paths() {
        let predicate = parse(&compare("equal", "address.zip", "1000", "int"));
        let file = |min: i64, max: i64| {
            TestFile::default().with_stats(json!({
                "numRecords": 5,
                "minValues": {"address": {"zip": min}},
                "maxValues": {"address": {"zip": max}},
                "nullCount": {"address": {"zip": 0}},
            }))
        };
        assert_eq!(file(1001, 2000).eval(&predicate), Tri::False);
        assert_eq!(file(500, 2000).eval(&predicate), Tri::Unknown);
        // A top-level column whose name contains a dot wins over the nested path.
        let dotted = TestFile::default().with_stats(json!({
            "numRecords": 5, "minValues": {"address.zip": 1}, "maxValues": {"address.zip": 2}
        }));
        assert_eq!(dotted.eval(&predicate), Tri::False);
        // Under column mapping the map gives the physical dotted path.
        let mut mapped = file(1001, 2000);
        mapped.stats = Some(json!({
            "numRecords": 5,
            "minValues": {"col-a": {"col-z": 1001}}, "maxValues": {"col-a": {"col-z": 2000}},
        }));
        mapped.physical_names = Some([("address.zip".into(), "col-a.col-z".into())].into());
        assert_eq!(mapped.eval(&predicate), Tri::False);
    }

    #[test]
    fn json_partition_values_map() {
        let values = json!({"p": "3", "q": null, "r": 7});
        let Value::Object(values) = values else {
            unreachable!()
        };
        assert_eq!(values.partition_value("p"), Some(Some("3")));
        assert_eq!(values.partition_value("q"), Some(None));
        assert_eq!(values.partition_value("r"), None);
        assert_eq!(values.partition_value("s"), None);
        let columns = vec!["p".to_owned()];
        let facts = FileFacts::new(&columns, &values);
        assert!(!might_match(
            &parse(&compare("equal", "p", "4", "int")),
            &facts
        ));
        assert!(might_match(
            &parse(&compare("equal", "p", "3", "int")),
            &facts
        ));
        let plain: HashMap<String, String> = [("p".to_owned(), "3".to_owned())].into();
        let facts = FileFacts::new(&columns, &plain);
        assert!(!might_match(
            &parse(&compare("equal", "p", "4", "int")),
            &facts
        ));
    }

    #[test]
    fn column_against_column_and_literal_against_literal() {
        let columns = parse(&op("equal", vec![column("a", "int"), column("b", "int")]));
        let file = TestFile::partitions(&[("a", Some("1")), ("b", Some("2"))]);
        assert_eq!(file.eval(&columns), Tri::Unknown);
        let literals = parse(&op(
            "lessThan",
            vec![literal("1", "int"), literal("2", "int")],
        ));
        assert_eq!(file.eval(&literals), Tri::True);
        let negated = parse(&op(
            "not",
            vec![op(
                "lessThan",
                vec![literal("1", "int"), literal("2", "int")],
            )],
        ));
        assert_eq!(file.eval(&negated), Tri::False);
    }

    // ---- limit ---------------------------------------------------------------------------

    #[test]
    fn limit_tracker_stops_once_the_sum_reaches_the_limit() {
        let mut tracker = LimitTracker::new(10);
        assert!(tracker.admit(4));
        assert!(tracker.admit(5));
        assert!(!tracker.is_reached());
        assert!(tracker.admit(3));
        assert!(tracker.is_reached());
        assert!(!tracker.admit(1));
        assert_eq!(tracker.records_so_far(), 12);

        let mut zero = LimitTracker::new(0);
        assert!(!zero.admit(1));

        // Files without stats count 0, so they never stop the stream.
        let mut no_stats = LimitTracker::new(1);
        for _ in 0..5 {
            assert!(no_stats.admit(live_records(None, None)));
        }
        assert!(limit_reached(5, 5));
        assert!(!limit_reached(4, 5));
    }

    #[test]
    fn live_records_subtract_deletion_vectors() {
        let stats = json!({"numRecords": 10});
        assert_eq!(live_records(Some(&stats), None), 10);
        assert_eq!(live_records(Some(&stats), Some(3)), 7);
        assert_eq!(live_records(Some(&stats), Some(30)), 0);
        assert_eq!(live_records(Some(&json!({})), None), 0);
        assert_eq!(live_records(None, Some(2)), 0);
    }

    #[test]
    fn limit_applies_only_without_predicate_hints() {
        assert_eq!(
            LimitTracker::for_request(Some(5), false),
            Some(LimitTracker::new(5))
        );
        assert_eq!(LimitTracker::for_request(Some(5), true), None);
        assert_eq!(LimitTracker::for_request(None, false), None);
    }

    // ---- property: never drop a file that holds a matching row -------------------------

    mod property {
        use super::*;

        struct Rng(u64);

        impl Rng {
            fn next(&mut self) -> u64 {
                self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = self.0;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            }

            fn below(&mut self, bound: usize) -> usize {
                (self.next() % bound as u64) as usize
            }

            fn chance(&mut self, percent: usize) -> bool {
                self.below(100) < percent
            }

            fn pick<T: Clone>(&mut self, items: &[T]) -> T {
                items[self.below(items.len())].clone()
            }
        }

        #[derive(Clone, Debug, PartialEq)]
        enum Cell {
            Null,
            Int(i64),
            Text(String),
            Date(i32),
            Micros(i64),
            Real(f64),
        }

        /// The columns of the generated table: name, wire type, partition?
        const COLUMNS: [(&str, &str, bool); 8] = [
            ("p", "long", true),
            ("q", "string", true),
            ("x", "long", false),
            ("s", "string", false),
            ("d", "date", false),
            ("t", "timestamp", false),
            ("f", "double", false),
            ("n.y", "int", false),
        ];

        const TEXTS: [&str; 9] = ["", "a", "ab", "abc", "abd", "b", "ba", "\u{e9}", "z"];
        const TEXT_LITERALS: [&str; 12] = [
            "", "a", "aa", "ab", "abc", "abcd", "abd", "b", "ba", "bb", "\u{e9}", "zz",
        ];
        const BASE_DAYS: i32 = 19_000;
        const BASE_MICROS: i64 = 1_700_000_000_000_000;

        fn random_cell(rng: &mut Rng, column: usize) -> Cell {
            if rng.chance(20) {
                return Cell::Null;
            }
            match COLUMNS[column].0 {
                "p" | "x" => Cell::Int(rng.below(7) as i64 - 3),
                "n.y" => Cell::Int(rng.below(5) as i64 - 2),
                "q" => Cell::Text(rng.pick(&["a", "b", "c"]).to_owned()),
                "s" => Cell::Text(rng.pick(&TEXTS).to_owned()),
                "d" => Cell::Date(BASE_DAYS + rng.below(5) as i32),
                "t" => Cell::Micros(BASE_MICROS + rng.pick(&[0, 500, 999, 1000, 1500, 2000])),
                _ => Cell::Real(rng.pick(&[-1.5, 0.0, 2.5, f64::NAN])),
            }
        }

        fn random_literal(rng: &mut Rng, column: usize) -> Cell {
            match COLUMNS[column].0 {
                "p" | "x" | "n.y" => Cell::Int(rng.below(9) as i64 - 4),
                "q" => Cell::Text(rng.pick(&["a", "b", "c", "bb", ""]).to_owned()),
                "s" => Cell::Text(rng.pick(&TEXT_LITERALS).to_owned()),
                "d" => Cell::Date(BASE_DAYS - 1 + rng.below(7) as i32),
                "t" => {
                    let offsets = [-1, 0, 499, 500, 999, 1000, 1001, 1999, 2000, 2001];
                    Cell::Micros(BASE_MICROS + rng.pick(&offsets))
                }
                _ => Cell::Real(rng.pick(&[-2.0, -1.5, 0.0, 1.0, 2.5, 3.0])),
            }
        }

        #[derive(Clone, Debug)]
        enum Tree {
            Constant(bool),
            IsNull(usize),
            Not(Box<Tree>),
            And(Vec<Tree>),
            Or(Vec<Tree>),
            Compare {
                op: CompareOp,
                column: usize,
                literal: Cell,
                literal_first: bool,
            },
        }

        fn random_tree(rng: &mut Rng, depth: usize) -> Tree {
            let leaf = depth == 0 || rng.chance(40);
            if leaf {
                return match rng.below(20) {
                    0 => Tree::Constant(rng.chance(50)),
                    1..=3 => Tree::IsNull(rng.below(COLUMNS.len())),
                    _ => {
                        let column = rng.below(COLUMNS.len());
                        let op = rng.pick(&[
                            CompareOp::Equal,
                            CompareOp::Less,
                            CompareOp::LessOrEqual,
                            CompareOp::Greater,
                            CompareOp::GreaterOrEqual,
                        ]);
                        let literal = random_literal(rng, column);
                        Tree::Compare {
                            op,
                            column,
                            literal,
                            literal_first: rng.chance(30),
                        }
                    }
                };
            }
            match rng.below(3) {
                0 => Tree::Not(Box::new(random_tree(rng, depth - 1))),
                kind => {
                    let count = 2 + rng.below(2);
                    let children = (0..count).map(|_| random_tree(rng, depth - 1)).collect();
                    if kind == 1 {
                        Tree::And(children)
                    } else {
                        Tree::Or(children)
                    }
                }
            }
        }

        fn format_date(days: i32) -> String {
            let date = Date::from_julian_day(days + UNIX_EPOCH_JULIAN_DAY).expect("valid day");
            format!(
                "{:04}-{:02}-{:02}",
                date.year(),
                u8::from(date.month()),
                date.day()
            )
        }

        fn format_micros(micros: i64, millis_only: bool) -> String {
            let nanos = i128::from(micros) * 1_000;
            let instant = OffsetDateTime::from_unix_timestamp_nanos(nanos).expect("in range");
            let (date, time) = (instant.date(), instant.time());
            let head = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                date.year(),
                u8::from(date.month()),
                date.day(),
                time.hour(),
                time.minute(),
                time.second()
            );
            if millis_only {
                format!("{head}.{:03}Z", time.microsecond() / 1_000)
            } else {
                format!("{head}.{:06}Z", time.microsecond())
            }
        }

        fn literal_text(cell: &Cell) -> String {
            match cell {
                Cell::Int(value) => value.to_string(),
                Cell::Text(value) => value.clone(),
                Cell::Date(days) => format_date(*days),
                Cell::Micros(micros) => format_micros(*micros, false),
                Cell::Real(value) => value.to_string(),
                Cell::Null => unreachable!("literals are never NULL"),
            }
        }

        fn tree_json(tree: &Tree) -> Value {
            match tree {
                Tree::Constant(value) => literal(&value.to_string(), "bool"),
                Tree::IsNull(column) => op(
                    "isNull",
                    vec![super::column(COLUMNS[*column].0, COLUMNS[*column].1)],
                ),
                Tree::Not(child) => op("not", vec![tree_json(child)]),
                Tree::And(children) => op("and", children.iter().map(tree_json).collect()),
                Tree::Or(children) => op("or", children.iter().map(tree_json).collect()),
                Tree::Compare {
                    op: compare_op,
                    column,
                    literal: value,
                    literal_first,
                } => {
                    let (name, value_type) = (COLUMNS[*column].0, COLUMNS[*column].1);
                    let column_leaf = super::column(name, value_type);
                    let literal_leaf = literal(&literal_text(value), value_type);
                    let (wire_op, children) = if *literal_first {
                        (compare_op.swapped(), vec![literal_leaf, column_leaf])
                    } else {
                        (*compare_op, vec![column_leaf, literal_leaf])
                    };
                    let wire = match wire_op {
                        CompareOp::Equal => "equal",
                        CompareOp::Less => "lessThan",
                        CompareOp::LessOrEqual => "lessThanOrEqual",
                        CompareOp::Greater => "greaterThan",
                        CompareOp::GreaterOrEqual => "greaterThanOrEqual",
                        CompareOp::NotEqual => unreachable!("not generated"),
                    };
                    op(wire, children)
                }
            }
        }

        /// Spark ordering: NaN equals NaN and sorts above every number.
        fn spark_order(left: &Cell, right: &Cell) -> Ordering {
            match (left, right) {
                (Cell::Int(left), Cell::Int(right)) => left.cmp(right),
                (Cell::Text(left), Cell::Text(right)) => left.as_bytes().cmp(right.as_bytes()),
                (Cell::Date(left), Cell::Date(right)) => left.cmp(right),
                (Cell::Micros(left), Cell::Micros(right)) => left.cmp(right),
                (Cell::Real(left), Cell::Real(right)) => match (left.is_nan(), right.is_nan()) {
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    (false, false) => left.partial_cmp(right).expect("not NaN"),
                },
                _ => unreachable!("same types"),
            }
        }

        /// SQL three-valued result of `tree` on one row (Spark semantics); `None` is NULL.
        fn sql(tree: &Tree, row: &[Cell]) -> Option<bool> {
            match tree {
                Tree::Constant(value) => Some(*value),
                Tree::IsNull(column) => Some(row[*column] == Cell::Null),
                Tree::Not(child) => sql(child, row).map(|value| !value),
                Tree::And(children) => {
                    let values: Vec<_> = children.iter().map(|child| sql(child, row)).collect();
                    if values.contains(&Some(false)) {
                        Some(false)
                    } else if values.contains(&None) {
                        None
                    } else {
                        Some(true)
                    }
                }
                Tree::Or(children) => {
                    let values: Vec<_> = children.iter().map(|child| sql(child, row)).collect();
                    if values.contains(&Some(true)) {
                        Some(true)
                    } else if values.contains(&None) {
                        None
                    } else {
                        Some(false)
                    }
                }
                Tree::Compare {
                    op: compare_op,
                    column,
                    literal: value,
                    ..
                } => {
                    if row[*column] == Cell::Null {
                        return None;
                    }
                    Some(compare_op.holds(spark_order(&row[*column], value)))
                }
            }
        }

        /// Dataframe semantics: NULL and NaN compare false, NOT is the complement, NaN is NA.
        fn dataframe(tree: &Tree, row: &[Cell]) -> bool {
            let missing = |cell: &Cell| match cell {
                Cell::Null => true,
                Cell::Real(value) => value.is_nan(),
                _ => false,
            };
            match tree {
                Tree::Constant(value) => *value,
                Tree::IsNull(column) => missing(&row[*column]),
                Tree::Not(child) => !dataframe(child, row),
                Tree::And(children) => children.iter().all(|child| dataframe(child, row)),
                Tree::Or(children) => children.iter().any(|child| dataframe(child, row)),
                Tree::Compare {
                    op: compare_op,
                    column,
                    literal: value,
                    ..
                } => !missing(&row[*column]) && compare_op.holds(spark_order(&row[*column], value)),
            }
        }

        fn stat_value(cell: &Cell, rng: &mut Rng, is_max: bool) -> Value {
            match cell {
                Cell::Int(value) => json!(value),
                Cell::Text(value) => {
                    if rng.chance(50) && value.chars().count() > 1 {
                        // Truncated like a writer with a short prefix length.
                        let keep = 1 + rng.below(value.chars().count() - 1);
                        let mut prefix: String = value.chars().take(keep).collect();
                        if is_max && rng.chance(50) {
                            prefix.push('\u{10FFFF}');
                        }
                        json!(prefix)
                    } else {
                        json!(value)
                    }
                }
                Cell::Date(days) => json!(format_date(*days)),
                Cell::Micros(micros) => json!(format_micros(*micros, rng.chance(60))),
                Cell::Real(value) => json!(value),
                Cell::Null => unreachable!("stats skip NULL"),
            }
        }

        fn insert_stat(stats: &mut Map<String, Value>, section: &str, path: &str, value: Value) {
            let mut node = stats
                .entry(section.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            let parts: Vec<&str> = path.split('.').collect();
            for part in &parts[..parts.len() - 1] {
                node = node
                    .as_object_mut()
                    .expect("object")
                    .entry(part.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
            }
            node.as_object_mut()
                .expect("object")
                .insert(parts[parts.len() - 1].into(), value);
        }

        /// Stats computed from the rows, with the omissions and truncations writers make.
        fn stats_for(rows: &[Vec<Cell>], rng: &mut Rng, rename: &dyn Fn(&str) -> String) -> Value {
            let mut stats = Map::new();
            stats.insert("numRecords".into(), json!(rows.len()));
            let with_null_counts = rng.chance(85);
            for (index, (name, _, partition)) in COLUMNS.iter().enumerate() {
                if *partition || rng.chance(10) {
                    continue;
                }
                let path = rename(name);
                let cells: Vec<&Cell> = rows.iter().map(|row| &row[index]).collect();
                let nulls = cells.iter().filter(|cell| ***cell == Cell::Null).count();
                if with_null_counts {
                    insert_stat(&mut stats, "nullCount", &path, json!(nulls));
                }
                let nan_in_max = rng.chance(50);
                let values: Vec<&Cell> = cells
                    .into_iter()
                    .filter(|cell| match cell {
                        Cell::Null => false,
                        Cell::Real(value) => !value.is_nan() || nan_in_max,
                        _ => true,
                    })
                    .collect();
                let Some(first) = values.first() else {
                    continue;
                };
                let mut min = *first;
                let mut max = *first;
                for value in &values {
                    if spark_order(value, min) == Ordering::Less {
                        min = value;
                    }
                    if spark_order(value, max) == Ordering::Greater {
                        max = value;
                    }
                }
                let min = stat_value(min, rng, false);
                let max = match max {
                    Cell::Real(value) if value.is_nan() => json!("NaN"),
                    other => stat_value(other, rng, true),
                };
                insert_stat(&mut stats, "minValues", &path, min);
                insert_stat(&mut stats, "maxValues", &path, max);
            }
            Value::Object(stats)
        }

        fn run(seed: u64, cases: usize) -> (usize, usize) {
            let mut rng = Rng(seed);
            let (mut dropped, mut matching) = (0, 0);
            for case in 0..cases {
                let mapped = rng.chance(30);
                let rename = move |name: &str| -> String {
                    if mapped {
                        name.split('.')
                            .map(|part| format!("col-{part}"))
                            .collect::<Vec<_>>()
                            .join(".")
                    } else {
                        name.to_owned()
                    }
                };
                let partition_p = random_cell(&mut rng, 0);
                let partition_q = random_cell(&mut rng, 1);
                let row_count = 1 + rng.below(5);
                let rows: Vec<Vec<Cell>> = (0..row_count)
                    .map(|_| {
                        let mut row = vec![partition_p.clone(), partition_q.clone()];
                        row.extend((2..COLUMNS.len()).map(|column| random_cell(&mut rng, column)));
                        row
                    })
                    .collect();
                let stats = (!rng.chance(5)).then(|| stats_for(&rows, &mut rng, &rename));
                let partition_text = |cell: &Cell, rng: &mut Rng| match cell {
                    Cell::Null => rng.chance(50).then(String::new),
                    Cell::Int(value) => Some(value.to_string()),
                    Cell::Text(value) => Some(value.clone()),
                    _ => unreachable!("partitions are long and string"),
                };
                let mut partition_values = HashMap::new();
                partition_values.insert(rename("p"), partition_text(&partition_p, &mut rng));
                partition_values.insert(rename("q"), partition_text(&partition_q, &mut rng));
                let physical_names: HashMap<String, String> = COLUMNS
                    .iter()
                    .map(|(name, ..)| (name.to_string(), rename(name)))
                    .collect();
                let partition_columns = vec!["p".to_owned(), "q".to_owned()];

                let tree = random_tree(&mut rng, 3);
                let text = tree_json(&tree).to_string();
                let predicate = parse_predicate(&text)
                    .unwrap_or_else(|| panic!("seed {seed} case {case}: {text} must parse"));
                let mut facts = FileFacts::new(&partition_columns, &partition_values)
                    .with_stats(stats.as_ref());
                if mapped {
                    facts = facts.with_physical_names(&physical_names);
                }
                let outcome = evaluate(&predicate, &facts);
                let any_match = rows
                    .iter()
                    .any(|row| sql(&tree, row) == Some(true) || dataframe(&tree, row));
                if any_match {
                    matching += 1;
                    assert_ne!(
                        outcome,
                        Tri::False,
                        "LAKESHARE_SEED={seed} case {case}: dropped a matching file\n\
                         predicate {text}\nrows {rows:?}\nstats {stats:?}\n\
                         partitions {partition_values:?}"
                    );
                }
                if outcome == Tri::True {
                    let all_match = rows.iter().all(|row| sql(&tree, row) == Some(true));
                    assert!(
                        all_match,
                        "LAKESHARE_SEED={seed} case {case}: True but a row does not match\n\
                         predicate {text}\nrows {rows:?}"
                    );
                }
                if outcome == Tri::False {
                    dropped += 1;
                }
            }
            (dropped, matching)
        }

        #[test]
        fn might_match_never_drops_a_file_with_a_matching_row() {
            let cases = 20_000;
            for seed in [1, 2, 3] {
                let (dropped, matching) = run(seed, cases);
                // The filter must also do its job: a good share of files is dropped.
                assert!(dropped > cases / 10, "seed {seed}: only {dropped} dropped");
                assert!(
                    matching > cases / 10,
                    "seed {seed}: only {matching} matching"
                );
            }
        }
    }
}
