//! Label and field selectors in their query-string form (`a=b,c in (d,e),!f`).
//!
//! Our own parser, not `kube::core::Selector`: that type builds selectors (from
//! `metav1.LabelSelector` or expressions) and prints the string form, but has no parser for it
//! (kube 5 implements no `FromStr`), and a server must read what kubectl sends in
//! `?labelSelector=` (equality `=`/`==`/`!=`, set-based `in`/`notin`, `key`, `!key`).

use serde_json::Value;
use thiserror::Error;

/// A selector that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

/// A parsed label selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector(Vec<(String, Op)>);

impl LabelSelector {
    /// Parse the query form.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(part)?);
        }
        Ok(Self(reqs))
    }

    /// Whether an object's labels (a JSON object or null) match.
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|(k, op)| match op {
            Op::Eq(v) => get(k) == Some(v.as_str()),
            Op::NotEq(v) => get(k) != Some(v.as_str()),
            Op::In(vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Op::NotIn(vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Op::Exists => get(k).is_some(),
            Op::NotExists => get(k).is_none(),
        })
    }
}

/// Split on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn parse_requirement(p: &str) -> Result<(String, Op), SelectorError> {
    let err = || SelectorError(p.to_string());
    if let Some(k) = p.strip_prefix('!') {
        let k = k.trim();
        return if valid_key(k) {
            Ok((k.into(), Op::NotExists))
        } else {
            Err(err())
        };
    }
    for (sep, neg) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = p.split_once(sep) {
            let (k, v) = (k.trim(), v.trim());
            if !valid_key(k) || v.contains(['(', ')', ' ']) {
                return Err(err());
            }
            return Ok((
                k.into(),
                if neg {
                    Op::NotEq(v.into())
                } else {
                    Op::Eq(v.into())
                },
            ));
        }
    }
    let words: Vec<&str> = p.splitn(2, ' ').collect();
    if words.len() == 2 {
        let (k, rest) = (words[0].trim(), words[1].trim());
        let (neg, list) = if let Some(l) = rest.strip_prefix("notin") {
            (true, l)
        } else if let Some(l) = rest.strip_prefix("in") {
            (false, l)
        } else {
            return Err(err());
        };
        let list = list
            .trim()
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or_else(err)?;
        let values: Vec<String> = list.split(',').map(|v| v.trim().to_string()).collect();
        if !valid_key(k) {
            return Err(err());
        }
        return Ok((
            k.into(),
            if neg {
                Op::NotIn(values)
            } else {
                Op::In(values)
            },
        ));
    }
    if valid_key(p) {
        Ok((p.into(), Op::Exists))
    } else {
        Err(err())
    }
}

/// A parsed field selector (`metadata.name=x,status.phase!=Running`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parse, accepting only fields in `allowed` (plus `metadata.name` and `metadata.namespace`).
    pub fn parse(s: &str, allowed: &[String]) -> Result<Self, SelectorError> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, neg, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, false, v)
            } else {
                return Err(SelectorError(part.to_string()));
            };
            let k = k.trim();
            if k != "metadata.name" && k != "metadata.namespace" && !allowed.iter().any(|a| a == k)
            {
                return Err(SelectorError(format!("field label not supported: {k}")));
            }
            out.push((k.to_string(), neg, v.trim().to_string()));
        }
        Ok(Self(out))
    }

    /// Whether `object` matches.
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(k, neg, v)| {
            let mut node = Some(object);
            for seg in k.split('.') {
                node = node.and_then(|n| n.get(seg));
            }
            let actual = match node {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (actual == *v) != *neg
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn label_selector_forms() {
        let labels = json!({"app": "web", "tier": "a"});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(Some(&labels));
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(m("tier in (a, b),!missing"));
        assert!(!m("tier notin (a)"));
        assert!(!m("app!=web"));
        assert!(m(""));
        assert!(LabelSelector::parse("app in a").is_err());
        assert!(LabelSelector::parse("a b c").is_err());
    }

    #[test]
    fn field_selector_checks_fields() {
        let obj = json!({"metadata": {"name": "x"}, "status": {"phase": "Running"}});
        let allowed = vec!["status.phase".to_string()];
        assert!(
            FieldSelector::parse("metadata.name=x,status.phase!=Failed", &allowed)
                .unwrap()
                .matches(&obj)
        );
        assert!(FieldSelector::parse("spec.foo=1", &allowed).is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,40}") {
            let _ = LabelSelector::parse(&s);
            let _ = FieldSelector::parse(&s, &[]);
        }
    }
}
