//! DataVolume checks (CDI's `datavolume-validate` webhook).

use super::{FieldError, check_one_of, set_fields};
use crate::cdi::v1beta1::DataVolumeSpec;
use crate::path::FieldPath;
use crate::quantity::bytes_of;

const CONTENT_TYPES: &[&str] = &["kubevirt", "archive"];

/// Validate a DataVolume spec at `path` (a DataVolume's `spec` or a VM's `dataVolumeTemplates[i].spec`).
pub(crate) fn validate_dv_spec(
    spec: &DataVolumeSpec,
    path: &FieldPath,
    errs: &mut Vec<FieldError>,
) {
    let populator = spec
        .pvc
        .as_ref()
        .is_some_and(|p| p.data_source_ref.is_some())
        || spec
            .storage
            .as_ref()
            .is_some_and(|s| s.data_source_ref.is_some());
    match (&spec.source, &spec.source_ref) {
        (Some(_), Some(_)) => errs.push(FieldError::forbidden(
            path.field("sourceRef"),
            "source and sourceRef are mutually exclusive; set exactly one",
        )),
        (None, None) if !populator => errs.push(FieldError::required(
            path.field("source"),
            "a DataVolume needs exactly one of source or sourceRef",
        )),
        _ => {}
    }
    if let Some(source) = &spec.source {
        let sp = path.field("source");
        let kinds = set_fields(source, &[]);
        if kinds.len() != 1 {
            errs.push(FieldError::invalid(sp.clone(), &format!("a source has exactly one type (http, registry, pvc, blank, upload, ...), this one has {}", if kinds.is_empty() { "none".to_string() } else { kinds.join(", ") })));
        }
        if let Some(http) = &source.http
            && !(http.url.starts_with("http://") || http.url.starts_with("https://"))
        {
            errs.push(FieldError::invalid(
                sp.field("http").field("url"),
                &format!("{:?} is not an http(s) URL", http.url),
            ));
        }
        if let Some(reg) = &source.registry {
            let rp = sp.field("registry");
            match (&reg.url, &reg.image_stream) {
                (Some(_), Some(_)) => errs.push(FieldError::forbidden(
                    rp.field("imageStream"),
                    "url and imageStream are mutually exclusive",
                )),
                (None, None) => errs.push(FieldError::required(
                    rp.field("url"),
                    "a registry source needs url (docker://...) or imageStream",
                )),
                (Some(url), None)
                    if !(url.starts_with("docker://") || url.starts_with("oci-archive://")) =>
                {
                    errs.push(FieldError::invalid(
                        rp.field("url"),
                        &format!("{url:?} must start with docker:// or oci-archive://"),
                    ));
                }
                _ => {}
            }
            check_one_of(
                reg.pull_method.as_deref(),
                &["pod", "node"],
                rp.field("pullMethod"),
                errs,
            );
        }
        if let Some(pvc) = &source.pvc
            && pvc.name.is_empty()
        {
            errs.push(FieldError::required(
                sp.field("pvc").field("name"),
                "name the PVC to clone",
            ));
        }
    }
    if let Some(r) = &spec.source_ref {
        let rp = path.field("sourceRef");
        check_one_of(
            Some(r.kind.as_str()),
            &["DataSource"],
            rp.field("kind"),
            errs,
        );
        if r.name.is_empty() {
            errs.push(FieldError::required(
                rp.field("name"),
                "name the DataSource",
            ));
        }
    }
    let cloning = spec
        .source
        .as_ref()
        .is_some_and(|s| s.pvc.is_some() || s.snapshot.is_some())
        || spec.source_ref.is_some();
    match (&spec.pvc, &spec.storage) {
        (Some(_), Some(_)) => errs.push(FieldError::forbidden(
            path.field("storage"),
            "pvc and storage are mutually exclusive; prefer storage",
        )),
        // A clone can take its size (and the rest) from its source.
        (None, None) if !cloning => errs.push(FieldError::required(
            path.field("storage"),
            "a DataVolume needs storage (or pvc); only a clone can leave it out",
        )),
        (None, None) => {}
        (Some(pvc), None) => {
            let size = pvc
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"));
            let sp = path
                .field("pvc")
                .field("resources")
                .field("requests")
                .key("storage");
            match size {
                None if !cloning => errs.push(FieldError::required(sp, "a pvc needs a storage size (or use storage, which can size itself from the source)")),
                Some(q) => check_size(q, sp, errs),
                None => {}
            }
        }
        (None, Some(storage)) => {
            if let Some(q) = storage
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
            {
                check_size(
                    q,
                    path.field("storage")
                        .field("resources")
                        .field("requests")
                        .key("storage"),
                    errs,
                );
            }
        }
    }
    check_one_of(
        spec.content_type.as_deref(),
        CONTENT_TYPES,
        path.field("contentType"),
        errs,
    );
    if spec.content_type.as_deref() == Some("archive")
        && spec
            .source
            .as_ref()
            .is_some_and(|s| s.http.is_none() && s.upload.is_none())
    {
        errs.push(FieldError::invalid(
            path.field("contentType"),
            "contentType archive works only with http or upload sources",
        ));
    }
}

fn check_size(
    q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    path: FieldPath,
    errs: &mut Vec<FieldError>,
) {
    match bytes_of(q) {
        Ok(0) => errs.push(FieldError::invalid(
            path,
            "storage size must be more than 0",
        )),
        Ok(_) => {}
        Err(e) => errs.push(FieldError::invalid(path, &e.to_string())),
    }
}
