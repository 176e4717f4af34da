//! Admission: what runs between decoding a write and storing it. Structural-schema pruning,
//! defaulting and validation for every custom resource, then, for KubeVirt and CDI kinds, the
//! defaulting and validation upstream runs in its webhooks (kubevirt-api's `defaults` and
//! `validation`). Built-in workload kinds get upstream's rules the controllers rely on
//! (`semantics::workloads`).

use crate::error::ApiError;
use crate::registry::Resource;
use crate::semantics::schema::{self, Cause};
use kubevirt_api::defaults::{ClusterDefaults, apply};
use kubevirt_api::object::Object;
use kubevirt_api::validation::{FieldError, validate, validate_update};
use serde_json::Value;

/// What kind of write is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A new object.
    Create,
    /// A change to an existing object through its main endpoint.
    Update,
    /// A change through `/status`: only the schema applies.
    Status,
}

/// How unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Reject (400).
    Strict,
    /// Prune and warn (the server default).
    Warn,
    /// Prune silently.
    Ignore,
}

impl FieldValidation {
    /// From the query parameter.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        }
    }
}

/// Admit `obj` (already carrying its server-owned metadata). Returns warnings for the response.
pub fn admit(
    res: &Resource,
    version: &str,
    obj: &mut Value,
    old: Option<&Value>,
    op: Operation,
    fields: FieldValidation,
    cluster: &ClusterDefaults,
) -> Result<Vec<String>, ApiError> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut warnings = Vec::new();
    let mut schema_causes = Vec::new();
    if let Some(s) = res.schema(version) {
        let checked = schema::check_update(s, obj, old);
        if !checked.unknown.is_empty() {
            let list: Vec<String> = checked
                .unknown
                .iter()
                .map(|u| format!("unknown field \"{u}\""))
                .collect();
            match fields {
                FieldValidation::Strict => {
                    return Err(ApiError::bad_request(format!(
                        "{} in version \"{version}\" cannot be handled as a {}: strict decoding error: {}",
                        res.kind,
                        res.kind,
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => warnings.extend(list),
                FieldValidation::Ignore => {}
            }
        }
        schema_causes = checked.causes;
    }
    schema_causes.extend(crate::semantics::validation::validate(res, obj));
    if op != Operation::Status && res.builtin {
        schema_causes.extend(crate::semantics::workloads::validate(
            &res.group, &res.kind, obj,
        ));
    }
    // The schema's causes (types, required fields, CEL rules) alone, when no typed check follows.
    let schema_only = |warnings: Vec<String>| {
        if schema_causes.is_empty() {
            Ok(warnings)
        } else {
            Err(ApiError::invalid(res, &name, &schema_causes))
        }
    };
    if op == Operation::Status || !res.group.ends_with("kubevirt.io") {
        return schema_only(warnings);
    }
    let mut typed = match Object::decode(obj) {
        Ok(o) => o,
        Err(kubevirt_api::codec::DecodeError::UnknownKind { .. }) => return schema_only(warnings),
        Err(_) if !schema_causes.is_empty() => return schema_only(warnings),
        Err(e) => {
            return Err(ApiError::invalid(
                res,
                &name,
                &[Cause {
                    field: String::new(),
                    reason: "FieldValueInvalid",
                    message: e.to_string(),
                }],
            ));
        }
    };
    apply(&mut typed, cluster);
    let errors = match old.map(Object::decode) {
        Some(Ok(old)) => validate_update(&old, &typed),
        _ => validate(&typed),
    };
    // Every cause the client check (`kubevirt_api::validate`) reports, in its words, then the
    // schema's causes on fields it did not already name (a CEL rule restates a webhook rule in
    // the words a plain cluster shows; here the webhook's own words win).
    let mut all = causes(&errors);
    for c in schema_causes {
        if !all.iter().any(|k| k.field == c.field) {
            all.push(c);
        }
    }
    if !all.is_empty() {
        return Err(ApiError::invalid(res, &name, &all));
    }
    let mut encoded = typed
        .encode()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    // Keep the requested apiVersion (older served versions share the schema).
    encoded["apiVersion"] = obj["apiVersion"].clone();
    *obj = encoded;
    Ok(warnings)
}

fn causes(errors: &[FieldError]) -> Vec<Cause> {
    errors
        .iter()
        .map(|e| Cause {
            field: e.path.to_string(),
            reason: e.kind.reason(),
            message: e.message.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::resource_from_crd;
    use kubevirt_api::crd::CrdOptions;
    use kubevirt_api::object::all_crds;

    fn vm_resource() -> Resource {
        let crd = all_crds(&CrdOptions::default())
            .into_iter()
            .find(|c| c.spec.names.kind == "VirtualMachine")
            .expect("the VirtualMachine CRD");
        resource_from_crd(&serde_json::to_value(crd).expect("a CRD serialises"))
            .expect("the CRD registers")
    }

    /// A VM with problems the CRD's CEL rules also catch (runStrategy with running, an unknown
    /// runStrategy) and problems only the webhook rules catch (duplicate disk names, a disk with
    /// no volume): the server reports exactly the client check's causes, in its words.
    #[test]
    fn server_reports_every_client_cause_in_the_same_words() {
        let yaml = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: bad, namespace: default}
spec:
  running: true
  runStrategy: Sometimes
  template:
    spec:
      domain:
        memory: {guest: 64Mi}
        devices:
          disks:
          - {name: root, disk: {bus: virtio}}
          - {name: root, disk: {bus: floppy}}
      volumes:
      - {name: other, containerDisk: {image: example/image}}
"#;
        let docs = kubevirt_api::codec::documents_from_yaml(yaml).expect("the YAML parses");
        let mut value = docs[0].value.clone();
        let mut client = Object::decode(&value).expect("the VM decodes");
        apply(&mut client, &ClusterDefaults::default());
        let want: Vec<(String, String)> = validate(&client)
            .into_iter()
            .map(|e| (e.path.to_string(), e.message))
            .collect();
        assert!(
            want.len() >= 4,
            "the client check finds every problem: {want:?}"
        );

        let err = admit(
            &vm_resource(),
            "v1",
            &mut value,
            None,
            Operation::Create,
            FieldValidation::Strict,
            &ClusterDefaults::default(),
        )
        .expect_err("the server refuses the VM");
        assert_eq!(err.code, 422);
        let got: Vec<(String, String)> = err.details.as_ref().expect("causes")["causes"]
            .as_array()
            .expect("a list of causes")
            .iter()
            .map(|c| {
                (
                    c["field"].as_str().unwrap_or_default().to_string(),
                    c["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        assert_eq!(got, want);
    }
}
