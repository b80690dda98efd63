//! Plain-text tables for the operator's `list` and `get` commands: a header
//! row, columns padded to their widest cell, two spaces between columns, no
//! trailing spaces. Cells are made from API documents by the helpers below.

use serde_json::Value;

/// A table: headers and rows of cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines of text, header first.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.chars().count())));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Two columns, field and value, for one document (`get`).
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    pairs.iter().map(|(k, v)| format!("{k:<width$}  {}", v.if_blank("-")).trim_end().to_string() + "\n").collect()
}

/// The string at `v`, or `-`.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "-".into(),
    }
}

/// An epoch-seconds timestamp as `YYYY-MM-DD HH:MM:SS` (UTC), or `-`.
pub fn time(v: &Value) -> String {
    match v.as_f64() {
        Some(secs) if secs.is_finite() && secs >= 0.0 => crate::clock::format_utc(secs as u64),
        _ => "-".into(),
    }
}

/// Tags `[{Key, Value}]` as `k=v,k2=v2`, or `-`.
pub fn tags(v: &Value) -> String {
    let list: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| format!("{}={}", t["Key"].as_str().unwrap_or(""), t["Value"].as_str().unwrap_or("")))
        .collect();
    if list.is_empty() { "-".into() } else { list.join(",") }
}

/// Tag filters `[{Key, Value, Type}]` as `k=v`, `k=*`, `*=v`, or `-`.
pub fn tag_filters(v: &Value) -> String {
    let list: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let key = f["Key"].as_str().filter(|k| !k.is_empty()).unwrap_or("*");
            let value = f["Value"].as_str().filter(|k| !k.is_empty()).unwrap_or("*");
            match f["Type"].as_str() {
                Some("KEY_ONLY") => format!("{key}=*"),
                Some("VALUE_ONLY") => format!("*={value}"),
                _ => format!("{key}={value}"),
            }
        })
        .collect();
    if list.is_empty() { "-".into() } else { list.join(" or ") }
}

/// A RevisionLocation as `s3://bucket/key`, `github:repo@commit`, or `-`.
pub fn revision(v: &Value) -> String {
    match v["revisionType"].as_str() {
        Some("S3") => {
            let s3 = &v["s3Location"];
            let mut out =
                format!("s3://{}/{}", s3["bucket"].as_str().unwrap_or("?"), s3["key"].as_str().unwrap_or("?"));
            if let Some(version) = s3["version"].as_str() {
                out.push_str(&format!("?versionId={version}"));
            }
            out
        }
        Some("GitHub") => {
            let gh = &v["gitHubLocation"];
            format!("github:{}@{}", gh["repository"].as_str().unwrap_or("?"), gh["commitId"].as_str().unwrap_or("?"))
        }
        Some(other) => other.to_string(),
        None => "-".into(),
    }
}

/// A deployment overview as `3/4 succeeded, 1 failed, ...` (the non-zero counts).
pub fn overview(o: &Value) -> String {
    let n = |k: &str| o[k].as_i64().unwrap_or(0);
    let total: i64 = ["Pending", "InProgress", "Succeeded", "Failed", "Skipped", "Ready"].iter().map(|k| n(k)).sum();
    let mut parts = vec![format!("{}/{total} succeeded", n("Succeeded"))];
    for (key, label) in
        [("Failed", "failed"), ("InProgress", "in progress"), ("Pending", "pending"), ("Skipped", "skipped")]
    {
        if n(key) > 0 {
            parts.push(format!("{} {label}", n(key)));
        }
    }
    parts.join(", ")
}

trait IfBlank {
    fn if_blank(&self, other: &str) -> String;
}

impl IfBlank for String {
    fn if_blank(&self, other: &str) -> String {
        if self.trim().is_empty() { other.to_string() } else { self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_are_padded_to_the_widest_cell_without_trailing_spaces() {
        let mut t = Table::new(&["NAME", "STATUS"]);
        t.row(vec!["kiosk-17".into(), "Registered".into()]);
        t.row(vec!["a".into()]);
        assert_eq!(t.render(), "NAME      STATUS\nkiosk-17  Registered\na\n");
    }

    #[test]
    fn cells_from_documents() {
        assert_eq!(time(&json!(0.0)), "1970-01-01 00:00:00");
        assert_eq!(time(&Value::Null), "-");
        assert_eq!(tags(&json!([{"Key": "env", "Value": "prod"}, {"Key": "k", "Value": ""}])), "env=prod,k=");
        assert_eq!(
            tag_filters(
                &json!([{"Key": "fleet", "Value": "a", "Type": "KEY_AND_VALUE"}, {"Key": "x", "Type": "KEY_ONLY"}])
            ),
            "fleet=a or x=*"
        );
        let location =
            json!({"revisionType": "S3", "s3Location": {"bucket": "b", "key": "app/x.tgz", "bundleType": "tgz"}});
        assert_eq!(revision(&location), "s3://b/app/x.tgz");
        assert_eq!(overview(&json!({"Succeeded": 3, "Failed": 1, "Pending": 0})), "3/4 succeeded, 1 failed");
    }
}
