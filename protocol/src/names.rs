//! The protocol's naming rules for shares, schemas and tables: at most 255 characters, no
//! space, `/` or control characters, and no `.` in schema or table names (clients split
//! `share.schema.table` on dots). Lookups compare names case-insensitively.

use crate::error::{Result, SharingError};

pub const NAME_CHARS_MAX: usize = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    Share,
    Schema,
    Table,
}

impl NameKind {
    pub fn label(self) -> &'static str {
        match self {
            NameKind::Share => "share",
            NameKind::Schema => "schema",
            NameKind::Table => "table",
        }
    }
}

/// Checks `name` against the rules for `kind`; the error says which rule failed.
pub fn validate_name(kind: NameKind, name: &str) -> Result<()> {
    let label = kind.label();
    if name.is_empty() {
        return Err(SharingError::invalid(format!(
            "{label} name must not be empty"
        )));
    }
    let chars = name.chars().count();
    if chars > NAME_CHARS_MAX {
        return Err(SharingError::invalid(format!(
            "{label} name is {chars} characters long; at most {NAME_CHARS_MAX} are allowed"
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| *c == ' ' || *c == '/' || c.is_control())
    {
        return Err(SharingError::invalid(format!(
            "{label} name {name:?} contains {bad:?}; spaces, '/' and control characters are \
             not allowed"
        )));
    }
    if kind != NameKind::Share && name.contains('.') {
        return Err(SharingError::invalid(format!(
            "{label} name {name:?} contains '.'; schema and table names must not"
        )));
    }
    Ok(())
}

/// The form names are compared in.
pub fn name_key(name: &str) -> String {
    name.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_unicode_names() {
        validate_name(NameKind::Share, "analytics-share").unwrap();
        validate_name(NameKind::Share, "share.with.dots").unwrap();
        validate_name(NameKind::Table, "employées_2024").unwrap();
        validate_name(NameKind::Schema, &"é".repeat(255)).unwrap();
    }

    #[test]
    fn refuses_each_rule() {
        for (kind, name) in [
            (NameKind::Share, ""),
            (NameKind::Share, "a b"),
            (NameKind::Share, "a/b"),
            (NameKind::Share, "a\u{7f}b"),
            (NameKind::Schema, "a\tb"),
            (NameKind::Schema, "a.b"),
            (NameKind::Table, "t.x"),
        ] {
            assert!(validate_name(kind, name).is_err(), "{kind:?} {name:?}");
        }
        assert!(validate_name(NameKind::Table, &"x".repeat(256)).is_err());
    }

    #[test]
    fn keys_fold_case() {
        assert_eq!(name_key("sHare1"), name_key("SHARE1"));
    }
}
