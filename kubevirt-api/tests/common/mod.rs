//! Shared helpers for kubevirt-api's integration tests: finding and reading upstream's fixtures.
#![allow(dead_code)]

use kubevirt_api::codec::{YamlDocument, documents_from_yaml};
use std::path::{Path, PathBuf};

/// `../shared/fixtures/upstream` beside the workspace (or `$KUBEVIRT_FIXTURES`).
pub fn fixtures_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("KUBEVIRT_FIXTURES") {
        return PathBuf::from(dir);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/upstream");
    assert!(
        dir.is_dir(),
        "upstream fixtures not found at {}: check out shared/ beside the workspace or set KUBEVIRT_FIXTURES",
        dir.display()
    );
    dir
}

/// The openAPIV3Schema of a CRD's first (storage) version, as JSON.
pub fn storage_schema(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> serde_json::Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    serde_json::to_value(schema.expect("the CRD has a schema")).expect("schema as JSON")
}

/// Every plain (non-template) YAML/JSON fixture with its documents.
pub fn fixture_documents() -> Vec<(String, Vec<YamlDocument>)> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(fixtures_dir())
        .expect("read fixtures dir")
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let plain = name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json");
        if !plain || name.contains("swagger") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("read fixture");
        if text.contains("{{") {
            continue; // a template, not a document
        }
        let docs = documents_from_yaml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        out.push((name, docs));
    }
    out
}
