//! Server-rendered HTML pages (no scripts, no CDN): every dynamic string is escaped.

use std::fmt::Write as _;

/// Escapes text for HTML content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment.
pub(crate) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;\
vertical-align:top}th{background:#f3f3f3}code,pre{font-family:ui-monospace,monospace}\
nav a{margin-right:1em}.muted{color:#777}";

/// A whole page around `body`.
pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
<style>{STYLE}</style></head><body><nav><a href=\"/api/table/\">tables</a>\
<a href=\"/router/\">cluster</a><a href=\"/status\">status</a></nav><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    )
}

/// The list of public tables.
pub(crate) fn tables(names: &[String]) -> String {
    let mut body = String::from("<ul>");
    for n in names {
        let _ = write!(
            body,
            "<li><a href=\"/api/table/{}/\">{}</a></li>",
            segment(n),
            escape(n)
        );
    }
    body.push_str("</ul>");
    if names.is_empty() {
        body = "<p class=\"muted\">No public tables.</p>".into();
    }
    page("Tables", &body)
}

/// One page of a table's entries.
pub(crate) fn entries(
    table: &str,
    rows: &[(String, serde_json::Value)],
    page_no: usize,
    pages: usize,
    total: usize,
    size: usize,
) -> String {
    let mut body = format!("<p>{total} keys, page {page_no} of {}</p>", pages.max(1));
    body.push_str("<table><tr><th>key</th><th>value</th></tr>");
    for (k, v) in rows {
        let _ = write!(
            body,
            "<tr><td><a href=\"/api/table/{}/{}/\">{}</a></td><td><code>{}</code></td></tr>",
            segment(table),
            segment(k),
            escape(k),
            escape(&v.to_string())
        );
    }
    body.push_str("</table><p>");
    if page_no > 1 {
        let _ = write!(
            body,
            "<a href=\"?page={}&amp;size={size}\">previous</a> ",
            page_no - 1
        );
    }
    if page_no < pages {
        let _ = write!(
            body,
            "<a href=\"?page={}&amp;size={size}\">next</a>",
            page_no + 1
        );
    }
    body.push_str("</p>");
    page(&format!("Table {table}"), &body)
}

/// One key.
pub(crate) fn key(table: &str, key: &str, value: &serde_json::Value) -> String {
    let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
    let body = format!(
        "<p><a href=\"/api/table/{}/\">{}</a></p><h2>{}</h2><pre>{}</pre>",
        segment(table),
        escape(table),
        escape(key),
        escape(&pretty)
    );
    page(&format!("{table}: {key}"), &body)
}

/// An error.
pub(crate) fn error(status: u16, message: &str) -> String {
    page(
        &format!("Error {status}"),
        &format!("<p>{}</p>", escape(message)),
    )
}

/// The cluster map.
pub(crate) fn cluster(map: &crate::cluster::ClusterMap, me: &str) -> String {
    let mut body = format!(
        "<p>{} tasks</p><table><tr><th>task</th><th>owner</th><th>standbys</th></tr>",
        map.tasks
    );
    let link = |w: &crate::cluster::WorkerInfo| {
        let name = if w.id == me {
            format!("{} (this worker)", w.id)
        } else {
            w.id.clone()
        };
        match &w.url {
            Some(u) => format!("<a href=\"{}\">{}</a>", escape(u), escape(&name)),
            None => escape(&name),
        }
    };
    for p in 0..map.tasks {
        let owner = map
            .owner(p)
            .map(link)
            .unwrap_or_else(|| "<span class=\"muted\">none</span>".into());
        let standbys: Vec<String> = map.standbys(p).into_iter().map(link).collect();
        let _ = write!(
            body,
            "<tr><td>{p}</td><td>{owner}</td><td>{}</td></tr>",
            standbys.join(", ")
        );
    }
    body.push_str("</table>");
    page("Cluster", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_text_is_escaped() {
        let html = key(
            "t<1>",
            "<script>alert('x')</script>",
            &serde_json::json!("a&b"),
        );
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(html.contains("a&amp;b"));
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
