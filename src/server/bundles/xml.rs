//! Just enough XML for S3: writing escaped elements, and reading the flat
//! request documents S3 clients send (CompleteMultipartUpload, Delete).

/// Namespace of S3's documents.
pub const NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// The document prolog.
pub const PROLOG: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// Appends `<name>value</name>` with `value` escaped.
pub fn element(out: &mut String, name: &str, value: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    escape_into(out, value);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// Appends `text` with XML's special characters escaped.
pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 => out.push_str(&format!("&#x{:X};", c as u32)),
            c => out.push(c),
        }
    }
}

/// The contents of every `<tag>...</tag>` in `text`, in order (not nested
/// in one another; attributes on the opening tag are allowed).
pub fn children<'a>(text: &'a str, tag: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let close = format!("</{tag}>");
    let mut rest = text;
    while let Some(start) = find_open(rest, tag) {
        let after = &rest[start..];
        let Some(content_end) = after.find(&close) else { break };
        found.push(&after[..content_end]);
        rest = &after[content_end + close.len()..];
    }
    found
}

/// Offset just past the first opening `<tag>` or `<tag attr...>` in `text`.
fn find_open(text: &str, tag: &str) -> Option<usize> {
    let pattern = format!("<{tag}");
    let mut from = 0;
    while let Some(i) = text[from..].find(&pattern) {
        let at = from + i + pattern.len();
        let rest = &text[at..];
        if rest.starts_with('>') {
            return Some(at + 1);
        }
        if rest.starts_with(|c: char| c.is_ascii_whitespace()) {
            return rest.find('>').map(|end| at + end + 1);
        }
        from = at;
    }
    None
}

/// The unescaped text of the first `<tag>` in `text`.
pub fn child(text: &str, tag: &str) -> Option<String> {
    children(text, tag).first().and_then(|t| unescape(t.trim_matches(|c: char| c == '\n' || c == '\r')))
}

/// Resolves entity and character references; `None` for a malformed one.
pub fn unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after.find(';')?;
        let entity = &after[..semi];
        match entity {
            "amp" => out.push('&'),
            "lt" => out.push('<'),
            "gt" => out.push('>'),
            "quot" => out.push('"'),
            "apos" => out.push('\''),
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    entity.strip_prefix('#')?.parse().ok()?
                };
                out.push(char::from_u32(code)?);
            }
        }
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes() {
        let doc = r#"<CompleteMultipartUpload xmlns="x"><Part><ETag>&quot;a&quot;</ETag><PartNumber>1</PartNumber></Part><Part><ETag>"b"</ETag><PartNumber>2</PartNumber></Part></CompleteMultipartUpload>"#;
        let parts = children(doc, "Part");
        assert_eq!(parts.len(), 2);
        assert_eq!(child(parts[0], "ETag").as_deref(), Some("\"a\""));
        assert_eq!(child(parts[1], "PartNumber").as_deref(), Some("2"));
        assert_eq!(children(doc, "CompleteMultipartUpload").len(), 1);
        assert!(children(doc, "Par").is_empty());
        let mut out = String::new();
        element(&mut out, "Key", "a<b>&\"c'\u{1}");
        assert_eq!(out, "<Key>a&lt;b&gt;&amp;&quot;c&apos;&#x1;</Key>");
        assert_eq!(unescape("a&#65;&#x42;&amp;").as_deref(), Some("aAB&"));
        assert_eq!(unescape("&bogus;"), None);
    }
}
