use super::error::DecodeError;
use serde::Serialize;
use serde_json::Value;

/// One document of a multi-document YAML stream, as generic JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlDocument {
    /// 0-based position in the stream, counting only non-empty documents.
    pub index: usize,
    /// The document.
    pub value: Value,
}

/// Split a YAML (or JSON) stream into its non-empty documents.
pub fn documents_from_yaml(text: &str) -> Result<Vec<YamlDocument>, DecodeError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| DecodeError::Syntax(e.to_string()))?;
    Ok(docs
        .into_iter()
        .filter(|v| !v.is_null())
        .enumerate()
        .map(|(index, value)| YamlDocument { index, value })
        .collect())
}

/// Render any serialisable value as YAML.
///
/// The value goes through JSON first: that is the document's canonical form (newtype wrappers such
/// as `CustomResourceSubresourceStatus({})` must stay `{}`, not become `null`).
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, DecodeError> {
    let json = serde_json::to_value(value).map_err(|e| DecodeError::Syntax(e.to_string()))?;
    serde_saphyr::to_string(&json).map_err(|e| DecodeError::Syntax(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_skips_empty_ones() {
        let docs = documents_from_yaml("a: 1\n---\n---\nb: [x]\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].index, 1);
        assert_eq!(docs[1].value["b"][0], "x");
    }

    #[test]
    fn newtype_wrapped_empty_objects_stay_objects() {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceSubresources;
        let s = CustomResourceSubresources {
            status: Some(serde_json::Value::Object(Default::default()).into()),
            scale: None,
        };
        assert_eq!(to_yaml(&s).unwrap().trim(), "status: {}");
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(matches!(
            documents_from_yaml("a: [1, 2\n"),
            Err(DecodeError::Syntax(_))
        ));
    }
}
