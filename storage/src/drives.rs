//! Drive arguments: MinIO's ellipsis syntax (`/mnt/disk{1...8}`, `{01...16}` zero-padded,
//! several ellipses in one argument expanded as a cartesian product, leftmost slowest).
//! The result keeps command-line order and never holds the same path twice.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::error::{Result, StorageError};

/// Expands every argument's `{A...B}` ranges into drive paths, in command-line order.
pub fn expand_drive_args(args: &[String]) -> Result<Vec<PathBuf>> {
    let mut drives = Vec::new();
    for arg in args {
        for path in expand_one(arg)? {
            drives.push(PathBuf::from(path));
        }
    }
    let mut seen = HashSet::new();
    for drive in &drives {
        if !seen.insert(drive.clone()) {
            return Err(StorageError::InvalidArgument(format!(
                "drive {} is given more than once",
                drive.display()
            )));
        }
    }
    Ok(drives)
}

/// One argument: find the first `{A...B}`, expand it, and recurse on the rest.
fn expand_one(arg: &str) -> Result<Vec<String>> {
    let Some(open) = arg.find('{') else {
        return Ok(vec![arg.to_string()]);
    };
    let Some(close_offset) = arg[open..].find('}') else {
        return Err(bad_arg(arg, "unclosed '{'"));
    };
    let close = open + close_offset;
    let inner = &arg[open + 1..close];
    let Some((start_text, end_text)) = inner.split_once("...") else {
        // Not an ellipsis: keep the brace literally and expand what follows.
        let tails = expand_one(&arg[open + 1..])?;
        return Ok(tails
            .into_iter()
            .map(|tail| format!("{}{{{}", &arg[..open], tail))
            .collect());
    };
    let start: u64 = start_text
        .parse()
        .map_err(|_| bad_arg(arg, "range start is not a number"))?;
    let end: u64 = end_text
        .parse()
        .map_err(|_| bad_arg(arg, "range end is not a number"))?;
    if start > end {
        return Err(bad_arg(arg, "range start is above its end"));
    }
    let width = if start_text.len() > 1 && start_text.starts_with('0') {
        start_text.len()
    } else {
        0
    };
    let head = &arg[..open];
    let tails = expand_one(&arg[close + 1..])?;
    let mut out = Vec::new();
    for number in start..=end {
        for tail in &tails {
            out.push(format!("{head}{number:0width$}{tail}"));
        }
    }
    Ok(out)
}

fn bad_arg(arg: &str, why: &str) -> StorageError {
    StorageError::InvalidArgument(format!("drive argument {arg:?}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(args: &[&str]) -> Vec<String> {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        expand_drive_args(&args)
            .unwrap()
            .into_iter()
            .map(|path| path.display().to_string())
            .collect()
    }

    #[test]
    fn plain_arguments_are_kept_in_order() {
        assert_eq!(expand(&["/b", "/a"]), vec!["/b", "/a"]);
    }

    #[test]
    fn one_range() {
        assert_eq!(
            expand(&["/mnt/disk{1...3}"]),
            vec!["/mnt/disk1", "/mnt/disk2", "/mnt/disk3"]
        );
    }

    #[test]
    fn zero_padded_range() {
        let drives = expand(&["/d{01...16}"]);
        assert_eq!(drives.len(), 16);
        assert_eq!(drives[0], "/d01");
        assert_eq!(drives[15], "/d16");
    }

    #[test]
    fn several_ranges_are_a_product() {
        assert_eq!(
            expand(&["/h{1...2}/d{1...2}"]),
            vec!["/h1/d1", "/h1/d2", "/h2/d1", "/h2/d2"]
        );
    }

    #[test]
    fn bad_ranges_are_refused() {
        for arg in ["/d{3...1}", "/d{a...b}", "/d{1...2"] {
            assert!(expand_drive_args(&[arg.to_string()]).is_err(), "{arg}");
        }
        assert!(expand_drive_args(&["/a".into(), "/a".into()]).is_err());
    }
}
