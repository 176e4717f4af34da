//! The JSONPath subset printer columns and scale paths use: `.a.b`, `.a[0]`, `.a[*].b`,
//! `.a[?(@.type=='Ready')].status`, optionally wrapped in `{}`.

use serde_json::Value;

/// Every value `path` selects in `root`.
pub fn select<'a>(root: &'a Value, path: &str) -> Vec<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut nodes = vec![root];
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let (name, tail) = r.split_at(end);
            if !name.is_empty() {
                nodes = nodes.into_iter().filter_map(|n| n.get(name)).collect();
            }
            rest = tail;
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return Vec::new();
            };
            let (inner, tail) = (&r[..end], &r[end + 1..]);
            nodes = nodes.into_iter().flat_map(|n| index(n, inner)).collect();
            rest = tail;
        } else {
            return Vec::new();
        }
    }
    nodes
}

fn index<'a>(node: &'a Value, inner: &str) -> Vec<&'a Value> {
    let Some(items) = node.as_array() else {
        return Vec::new();
    };
    if inner == "*" {
        return items.iter().collect();
    }
    if let Ok(i) = inner.parse::<i64>() {
        let i = if i < 0 { items.len() as i64 + i } else { i };
        return usize::try_from(i)
            .ok()
            .and_then(|i| items.get(i))
            .into_iter()
            .collect();
    }
    // ?(@.field=='value') or ?(@.field)
    let Some(filter) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) else {
        return Vec::new();
    };
    let filter = filter.trim();
    let (lhs, rhs) = match filter.split_once("==") {
        Some((l, r)) => (l.trim(), Some(r.trim().trim_matches(['\'', '"']))),
        None => (filter, None),
    };
    let Some(field) = lhs.strip_prefix("@") else {
        return Vec::new();
    };
    items
        .iter()
        .filter(|item| {
            let found = select(item, field);
            match (found.first(), rhs) {
                (Some(v), Some(want)) => match v {
                    Value::String(s) => s == want,
                    other => *other == want,
                },
                (Some(_), None) => true,
                (None, _) => false,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects_paths_and_filters() {
        let v = json!({"status": {"conditions": [{"type": "Paused", "status": "False"}, {"type": "Ready", "status": "True"}],
                       "interfaces": [{"ipAddress": "10.0.0.2"}]}});
        assert_eq!(
            select(&v, ".status.conditions[?(@.type=='Ready')].status"),
            [&json!("True")]
        );
        assert_eq!(
            select(&v, "{.status.interfaces[0].ipAddress}"),
            [&json!("10.0.0.2")]
        );
        assert_eq!(select(&v, ".status.conditions[*].type").len(), 2);
        assert!(select(&v, ".spec.missing").is_empty());
        assert!(select(&v, ".status.conditions[9]").is_empty());
    }
}
