//! Iceberg schemas (the JSON form in table metadata) and their translation to Delta schema
//! JSON in Spark's form.
//!
//! Invariants: field ids are kept exactly as Iceberg wrote them; a type Delta cannot carry
//! (`time`, nanosecond timestamps, `variant`, geometry, ...) is refused with an error naming
//! the column rather than mapped to a type the data files do not hold. `uuid` and `fixed[L]`
//! become `binary`, because the Parquet files hold their raw bytes. Column mapping ids are
//! emitted only when the table needs them ([`needs_column_mapping`]); the physical name is
//! the field's name in the schema being translated, so one response never disagrees with
//! itself.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{ErrorKind, Result, SharingError};

/// One Iceberg schema from the table metadata.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Schema {
    /// Absent in v1 metadata with a single `schema`: 0.
    #[serde(default)]
    pub schema_id: i32,
    pub fields: Vec<StructField>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct StructField {
    pub id: i32,
    pub name: String,
    pub required: bool,
    #[serde(rename = "type")]
    pub field_type: IcebergType,
    #[serde(default)]
    pub doc: Option<String>,
}

/// An Iceberg type. Primitive names Delta cannot represent are kept as [`Primitive::Other`]
/// and refused at translation.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(try_from = "TypeJson")]
pub enum IcebergType {
    Primitive(Primitive),
    Struct(Vec<StructField>),
    List {
        element_id: i32,
        element_required: bool,
        element: Box<IcebergType>,
    },
    Map {
        key_id: i32,
        key: Box<IcebergType>,
        value_id: i32,
        value_required: bool,
        value: Box<IcebergType>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Primitive {
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Decimal {
        precision: u32,
        scale: u32,
    },
    Date,
    Time,
    /// Microseconds since the epoch, no zone (Delta `timestamp_ntz`).
    Timestamp,
    /// Microseconds since the epoch, UTC (Delta `timestamp`).
    Timestamptz,
    String,
    Uuid,
    Fixed(u64),
    Binary,
    /// A type name this module does not translate (`timestamp_ns`, `variant`, ...).
    Other(String),
}

impl Schema {
    /// The top-level field called `name`.
    pub fn field_by_name(&self, name: &str) -> Option<&StructField> {
        self.fields.iter().find(|field| field.name == name)
    }

    /// Whether some column (at any depth) is a timestamp without zone, which Delta readers
    /// accept only with the `timestampNtz` table feature.
    pub fn has_timestamp_ntz(&self) -> bool {
        self.fields
            .iter()
            .any(|field| type_has_timestamp_ntz(&field.field_type))
    }

    /// Field id → (path of names from the top, type) for every struct field at any depth
    /// that is reachable through structs only (what Delta stats can name).
    pub fn struct_paths(&self) -> HashMap<i32, (Vec<String>, Primitive)> {
        let mut paths = HashMap::new();
        collect_struct_paths(&self.fields, &mut Vec::new(), &mut paths);
        paths
    }
}

/// Whether renamed or re-used column names make name-based reading wrong, so the Delta
/// form must carry Iceberg field ids as column mapping ids: some field id had another name
/// in an older schema, or a name (under the same parent) belonged to another field id.
pub fn needs_column_mapping(schemas: &[Schema]) -> bool {
    let mut name_of_id: HashMap<i32, &str> = HashMap::new();
    let mut id_of_name: HashMap<(i32, &str), i32> = HashMap::new();
    let mut conflict = false;
    for schema in schemas {
        visit_named_fields(&schema.fields, 0, &mut |parent_id, field| {
            if let Some(previous) = name_of_id.insert(field.id, &field.name) {
                conflict |= previous != field.name;
            }
            if let Some(previous) = id_of_name.insert((parent_id, &field.name), field.id) {
                conflict |= previous != field.id;
            }
        });
    }
    conflict
}

/// The Delta schema JSON string (`{"type":"struct","fields":[...]}`) of `schema`. With
/// `column_mapping`, every struct field carries `delta.columnMapping.id` (the Iceberg field
/// id) and `delta.columnMapping.physicalName` (its name here), and fields holding lists or
/// maps carry `parquet.field.nested.ids` for their element, key and value ids.
pub fn delta_schema_string(schema: &Schema, column_mapping: bool) -> Result<String> {
    let fields = delta_fields(&schema.fields, column_mapping, "")?;
    Ok(json!({"type": "struct", "fields": fields}).to_string())
}

/// The Delta name of a primitive type, or an error naming `column`.
pub fn delta_primitive_name(primitive: &Primitive, column: &str) -> Result<String> {
    let name = match primitive {
        Primitive::Boolean => "boolean".to_string(),
        Primitive::Int => "integer".to_string(),
        Primitive::Long => "long".to_string(),
        Primitive::Float => "float".to_string(),
        Primitive::Double => "double".to_string(),
        Primitive::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
        Primitive::Date => "date".to_string(),
        Primitive::Timestamp => "timestamp_ntz".to_string(),
        Primitive::Timestamptz => "timestamp".to_string(),
        Primitive::String => "string".to_string(),
        Primitive::Binary => "binary".to_string(),
        // Stored as Parquet fixed-length byte arrays, which Delta readers refuse as binary.
        Primitive::Uuid => return Err(unsupported_type(column, "uuid")),
        Primitive::Fixed(length) => {
            return Err(unsupported_type(column, &format!("fixed[{length}]")))
        }
        Primitive::Time => return Err(unsupported_type(column, "time")),
        Primitive::Other(name) => return Err(unsupported_type(column, name)),
    };
    Ok(name)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TypeJson {
    Primitive(String),
    Nested(NestedJson),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum NestedJson {
    Struct {
        fields: Vec<StructField>,
    },
    List {
        #[serde(rename = "element-id")]
        element_id: i32,
        #[serde(rename = "element-required")]
        element_required: bool,
        element: Box<IcebergType>,
    },
    Map {
        #[serde(rename = "key-id")]
        key_id: i32,
        key: Box<IcebergType>,
        #[serde(rename = "value-id")]
        value_id: i32,
        #[serde(rename = "value-required")]
        value_required: bool,
        value: Box<IcebergType>,
    },
}

impl TryFrom<TypeJson> for IcebergType {
    type Error = String;

    fn try_from(json: TypeJson) -> std::result::Result<Self, String> {
        Ok(match json {
            TypeJson::Primitive(name) => IcebergType::Primitive(parse_primitive(&name)?),
            TypeJson::Nested(NestedJson::Struct { fields }) => IcebergType::Struct(fields),
            TypeJson::Nested(NestedJson::List {
                element_id,
                element_required,
                element,
            }) => IcebergType::List {
                element_id,
                element_required,
                element,
            },
            TypeJson::Nested(NestedJson::Map {
                key_id,
                key,
                value_id,
                value_required,
                value,
            }) => IcebergType::Map {
                key_id,
                key,
                value_id,
                value_required,
                value,
            },
        })
    }
}

fn parse_primitive(name: &str) -> std::result::Result<Primitive, String> {
    let trimmed = name.trim();
    let primitive = match trimmed {
        "boolean" => Primitive::Boolean,
        "int" => Primitive::Int,
        "long" => Primitive::Long,
        "float" => Primitive::Float,
        "double" => Primitive::Double,
        "date" => Primitive::Date,
        "time" => Primitive::Time,
        "timestamp" => Primitive::Timestamp,
        "timestamptz" => Primitive::Timestamptz,
        "string" => Primitive::String,
        "uuid" => Primitive::Uuid,
        "binary" => Primitive::Binary,
        _ => {
            if let Some(arguments) = trimmed
                .strip_prefix("decimal(")
                .and_then(|rest| rest.strip_suffix(')'))
            {
                let (precision, scale) = arguments
                    .split_once(',')
                    .ok_or_else(|| format!("bad decimal type {name:?}"))?;
                let precision = precision.trim().parse::<u32>();
                let scale = scale.trim().parse::<u32>();
                match (precision, scale) {
                    (Ok(precision), Ok(scale)) if scale <= precision && precision <= 38 => {
                        Primitive::Decimal { precision, scale }
                    }
                    _ => return Err(format!("bad decimal type {name:?}")),
                }
            } else if let Some(length) = trimmed
                .strip_prefix("fixed[")
                .and_then(|rest| rest.strip_suffix(']'))
            {
                let length = length
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("bad fixed type {name:?}"))?;
                Primitive::Fixed(length)
            } else {
                Primitive::Other(trimmed.to_string())
            }
        }
    };
    Ok(primitive)
}

fn unsupported_type(column: &str, type_name: &str) -> SharingError {
    SharingError::new(
        ErrorKind::Unsupported,
        format!("column {column} has Iceberg type {type_name}, which Delta Sharing cannot serve"),
    )
}

fn type_has_timestamp_ntz(field_type: &IcebergType) -> bool {
    match field_type {
        IcebergType::Primitive(primitive) => *primitive == Primitive::Timestamp,
        IcebergType::Struct(fields) => fields
            .iter()
            .any(|field| type_has_timestamp_ntz(&field.field_type)),
        IcebergType::List { element, .. } => type_has_timestamp_ntz(element),
        IcebergType::Map { key, value, .. } => {
            type_has_timestamp_ntz(key) || type_has_timestamp_ntz(value)
        }
    }
}

/// Calls `visit(parent struct field id or 0, field)` for every named struct field, also
/// those inside lists and maps.
fn visit_named_fields<'a>(
    fields: &'a [StructField],
    parent_id: i32,
    visit: &mut impl FnMut(i32, &'a StructField),
) {
    for field in fields {
        visit(parent_id, field);
        visit_type_fields(&field.field_type, field.id, visit);
    }
}

fn visit_type_fields<'a>(
    field_type: &'a IcebergType,
    owner_id: i32,
    visit: &mut impl FnMut(i32, &'a StructField),
) {
    match field_type {
        IcebergType::Primitive(_) => {}
        IcebergType::Struct(fields) => visit_named_fields(fields, owner_id, visit),
        IcebergType::List {
            element_id,
            element,
            ..
        } => visit_type_fields(element, *element_id, visit),
        IcebergType::Map {
            key_id,
            key,
            value_id,
            value,
            ..
        } => {
            visit_type_fields(key, *key_id, visit);
            visit_type_fields(value, *value_id, visit);
        }
    }
}

fn collect_struct_paths(
    fields: &[StructField],
    prefix: &mut Vec<String>,
    paths: &mut HashMap<i32, (Vec<String>, Primitive)>,
) {
    for field in fields {
        prefix.push(field.name.clone());
        match &field.field_type {
            IcebergType::Primitive(primitive) => {
                paths.insert(field.id, (prefix.clone(), primitive.clone()));
            }
            IcebergType::Struct(children) => collect_struct_paths(children, prefix, paths),
            IcebergType::List { .. } | IcebergType::Map { .. } => {}
        }
        prefix.pop();
    }
}

fn delta_fields(fields: &[StructField], column_mapping: bool, path: &str) -> Result<Vec<Value>> {
    fields
        .iter()
        .map(|field| {
            let column = if path.is_empty() {
                field.name.clone()
            } else {
                format!("{path}.{}", field.name)
            };
            let mut metadata = Map::new();
            if column_mapping {
                metadata.insert("delta.columnMapping.id".into(), json!(field.id));
                metadata.insert("delta.columnMapping.physicalName".into(), json!(field.name));
                let mut nested_ids = Map::new();
                collect_nested_ids(&field.field_type, &field.name, &mut nested_ids);
                if !nested_ids.is_empty() {
                    metadata.insert("parquet.field.nested.ids".into(), Value::Object(nested_ids));
                }
            }
            if let Some(doc) = &field.doc {
                metadata.insert("comment".into(), json!(doc));
            }
            Ok(json!({
                "name": field.name,
                "type": delta_type(&field.field_type, column_mapping, &column)?,
                "nullable": !field.required,
                "metadata": metadata,
            }))
        })
        .collect()
}

fn delta_type(field_type: &IcebergType, column_mapping: bool, column: &str) -> Result<Value> {
    Ok(match field_type {
        IcebergType::Primitive(primitive) => json!(delta_primitive_name(primitive, column)?),
        IcebergType::Struct(fields) => {
            json!({"type": "struct", "fields": delta_fields(fields, column_mapping, column)?})
        }
        IcebergType::List {
            element_required,
            element,
            ..
        } => json!({
            "type": "array",
            "elementType": delta_type(element, column_mapping, &format!("{column}.element"))?,
            "containsNull": !element_required,
        }),
        IcebergType::Map {
            key,
            value_required,
            value,
            ..
        } => json!({
            "type": "map",
            "keyType": delta_type(key, column_mapping, &format!("{column}.key"))?,
            "valueType": delta_type(value, column_mapping, &format!("{column}.value"))?,
            "valueContainsNull": !value_required,
        }),
    })
}

/// Delta's `parquet.field.nested.ids`: `<name>.element`, `<name>.key`, `<name>.value`
/// (recursively for lists and maps directly inside lists and maps) → Iceberg ids. Structs
/// inside carry their own field metadata.
fn collect_nested_ids(field_type: &IcebergType, path: &str, ids: &mut Map<String, Value>) {
    match field_type {
        IcebergType::Primitive(_) | IcebergType::Struct(_) => {}
        IcebergType::List {
            element_id,
            element,
            ..
        } => {
            let element_path = format!("{path}.element");
            ids.insert(element_path.clone(), json!(element_id));
            collect_nested_ids(element, &element_path, ids);
        }
        IcebergType::Map {
            key_id,
            key,
            value_id,
            value,
            ..
        } => {
            let key_path = format!("{path}.key");
            let value_path = format!("{path}.value");
            ids.insert(key_path.clone(), json!(key_id));
            ids.insert(value_path.clone(), json!(value_id));
            collect_nested_ids(key, &key_path, ids);
            collect_nested_ids(value, &value_path, ids);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(json: Value) -> Schema {
        serde_json::from_value(json).expect("schema parses")
    }

    fn all_types_schema() -> Schema {
        schema(json!({
            "type": "struct", "schema-id": 0,
            "fields": [
                {"id": 1, "name": "b", "required": true, "type": "boolean"},
                {"id": 2, "name": "i", "required": false, "type": "int"},
                {"id": 3, "name": "l", "required": false, "type": "long"},
                {"id": 4, "name": "f", "required": false, "type": "float"},
                {"id": 5, "name": "d", "required": false, "type": "double"},
                {"id": 6, "name": "dec", "required": false, "type": "decimal(10, 2)"},
                {"id": 7, "name": "day", "required": false, "type": "date"},
                {"id": 8, "name": "ts", "required": false, "type": "timestamp"},
                {"id": 9, "name": "tstz", "required": false, "type": "timestamptz"},
                {"id": 10, "name": "s", "required": false, "type": "string"},
                {"id": 11, "name": "u", "required": false, "type": "binary"},
                {"id": 12, "name": "fx", "required": false, "type": "binary"},
                {"id": 13, "name": "bin", "required": false, "type": "binary"},
                {"id": 14, "name": "st", "required": false, "type": {
                    "type": "struct", "fields": [
                        {"id": 15, "name": "a", "required": true, "type": "int",
                         "doc": "the a"}]}},
                {"id": 16, "name": "arr", "required": false, "type": {
                    "type": "list", "element-id": 17, "element-required": false,
                    "element": "string"}},
                {"id": 18, "name": "mp", "required": false, "type": {
                    "type": "map", "key-id": 19, "key": "string", "value-id": 20,
                    "value-required": true, "value": {
                        "type": "list", "element-id": 21, "element-required": true,
                        "element": "long"}}}
            ]
        }))
    }

    #[test]
    fn fixed_length_types_are_refused_by_name() {
        for (type_name, shown) in [("uuid", "uuid"), ("fixed[16]", "fixed[16]")] {
            let refused = schema(json!({
                "type": "struct", "schema-id": 0,
                "fields": [{"id": 1, "name": "c", "required": false, "type": type_name}]
            }));
            let error = delta_schema_string(&refused, false).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Unsupported);
            assert!(error.message.contains(shown), "{}", error.message);
        }
    }

    #[test]
    fn every_primitive_and_nested_type_translates() {
        let delta: Value =
            serde_json::from_str(&delta_schema_string(&all_types_schema(), false).unwrap())
                .unwrap();
        let types: Vec<Value> = delta["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|field| field["type"].clone())
            .collect();
        assert_eq!(
            types[..13],
            [
                json!("boolean"),
                json!("integer"),
                json!("long"),
                json!("float"),
                json!("double"),
                json!("decimal(10,2)"),
                json!("date"),
                json!("timestamp_ntz"),
                json!("timestamp"),
                json!("string"),
                json!("binary"),
                json!("binary"),
                json!("binary"),
            ]
        );
        assert_eq!(delta["fields"][0]["nullable"], json!(false));
        assert_eq!(delta["fields"][1]["nullable"], json!(true));
        assert_eq!(delta["fields"][1]["metadata"], json!({}));
        assert_eq!(
            types[13],
            json!({"type": "struct", "fields": [{"name": "a", "type": "integer",
                "nullable": false, "metadata": {"comment": "the a"}}]})
        );
        assert_eq!(
            types[14],
            json!({"type": "array", "elementType": "string", "containsNull": true})
        );
        assert_eq!(
            types[15],
            json!({"type": "map", "keyType": "string", "valueType": {
                "type": "array", "elementType": "long", "containsNull": false},
                "valueContainsNull": false})
        );
    }

    #[test]
    fn column_mapping_metadata_carries_ids_and_physical_names() {
        let delta: Value =
            serde_json::from_str(&delta_schema_string(&all_types_schema(), true).unwrap()).unwrap();
        let map_field = &delta["fields"][15];
        assert_eq!(map_field["metadata"]["delta.columnMapping.id"], json!(18));
        assert_eq!(
            map_field["metadata"]["delta.columnMapping.physicalName"],
            json!("mp")
        );
        assert_eq!(
            map_field["metadata"]["parquet.field.nested.ids"],
            json!({"mp.key": 19, "mp.value": 20, "mp.value.element": 21})
        );
        let nested = &delta["fields"][13]["type"]["fields"][0]["metadata"];
        assert_eq!(nested["delta.columnMapping.id"], json!(15));
    }

    #[test]
    fn time_and_unknown_types_are_refused_with_the_column_name() {
        for type_name in ["time", "timestamp_ns", "variant"] {
            let schema = schema(json!({"type": "struct", "fields": [
                {"id": 1, "name": "st", "required": false, "type": {"type": "struct",
                    "fields": [{"id": 2, "name": "t", "required": false, "type": type_name}]}}
            ]}));
            let error = delta_schema_string(&schema, false).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Unsupported);
            assert!(error.message.contains("st.t"), "{}", error.message);
            assert!(error.message.contains(type_name), "{}", error.message);
        }
    }

    #[test]
    fn bad_decimal_is_a_parse_error() {
        let parsed: std::result::Result<Schema, _> = serde_json::from_value(json!({
            "type": "struct",
            "fields": [{"id": 1, "name": "x", "required": false, "type": "decimal(2, 5)"}]
        }));
        assert!(parsed.is_err());
    }

    #[test]
    fn column_mapping_is_needed_after_a_rename_or_a_reused_name() {
        let original = all_types_schema();
        assert!(!needs_column_mapping(std::slice::from_ref(&original)));
        assert!(!needs_column_mapping(&[original.clone(), original.clone()]));

        let mut renamed = original.clone();
        renamed.fields[1].name = "i2".into();
        assert!(needs_column_mapping(&[original.clone(), renamed]));

        // Column `i` dropped, then added again with a fresh id.
        let mut readded = original.clone();
        readded.fields[1].id = 99;
        assert!(needs_column_mapping(&[original.clone(), readded]));

        // A nested rename counts too.
        let mut nested = original.clone();
        if let IcebergType::Struct(fields) = &mut nested.fields[13].field_type {
            fields[0].name = "a2".into();
        }
        assert!(needs_column_mapping(&[original.clone(), nested]));

        // Adding a column is not a conflict.
        let mut added = original.clone();
        added.fields.push(StructField {
            id: 50,
            name: "new".into(),
            required: false,
            field_type: IcebergType::Primitive(Primitive::Long),
            doc: None,
        });
        assert!(!needs_column_mapping(&[original, added]));
    }

    #[test]
    fn struct_paths_reach_nested_struct_leaves_only() {
        let paths = all_types_schema().struct_paths();
        assert_eq!(
            paths[&15],
            (vec!["st".to_string(), "a".to_string()], Primitive::Int)
        );
        assert_eq!(
            paths[&6].1,
            Primitive::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert!(!paths.contains_key(&17));
        assert!(!paths.contains_key(&16));
        assert!(all_types_schema().has_timestamp_ntz());
    }
}
