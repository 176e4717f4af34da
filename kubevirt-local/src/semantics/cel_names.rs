//! Property names as CEL sees them in `x-kubernetes-validations` (Kubernetes' escaping): a
//! declared property whose name is a CEL reserved word is `__<word>__` (`self.__namespace__`),
//! and `__`, `.`, `-`, `/` inside a name are `__underscores__`, `__dot__`, `__dash__`,
//! `__slash__`. Map keys (`additionalProperties`) are data and stay as written.

use serde_json::{Map, Value};

/// CEL's reserved words, which Kubernetes escapes as property names.
const RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// The name a declared property `name` has in a CEL rule.
pub fn escaped(name: &str) -> String {
    if RESERVED.contains(&name) {
        return format!("__{name}__");
    }
    if !name.contains(['.', '-', '/']) && !name.contains("__") {
        return name.to_string();
    }
    name.replace("__", "__underscores__")
        .replace('.', "__dot__")
        .replace('-', "__dash__")
        .replace('/', "__slash__")
}

/// `value` with its declared properties (per `schema`) renamed as CEL sees them.
pub fn escape(value: &Value, schema: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            let mut out = Map::new();
            for (k, v) in map {
                match (props.and_then(|p| p.get(k)), extra) {
                    (Some(s), _) => {
                        out.insert(escaped(k), escape(v, s));
                    }
                    (None, Some(s)) => {
                        out.insert(k.clone(), escape(v, s));
                    }
                    (None, None) => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let s = schema.get("items").unwrap_or(&Value::Null);
            Value::Array(items.iter().map(|i| escape(i, s)).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn declared_properties_are_escaped_map_keys_are_not() {
        let schema = json!({"properties": {
            "namespace": {"type": "string"},
            "a.b-c/d": {"type": "string"},
            "labels": {"additionalProperties": {"type": "string"}}}});
        let v = json!({"namespace": "ns", "a.b-c/d": 1, "labels": {"namespace": "x"}, "free": 2});
        assert_eq!(
            escape(&v, &schema),
            json!({"__namespace__": "ns", "a__dot__b__dash__c__slash__d": 1,
                "labels": {"namespace": "x"}, "free": 2})
        );
        assert_eq!(escaped("x__y"), "x__underscores__y");
        assert_eq!(escaped("name"), "name");
    }
}
