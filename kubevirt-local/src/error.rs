//! API errors, rendered as Kubernetes `Status` objects (what kubectl prints as
//! `Error from server (Reason): message`).

use crate::registry::Resource;
use crate::semantics::schema::Cause;
use crate::storage::StoreError;
use serde_json::{Value, json};

/// An error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, if any.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 404 for an object.
    pub fn not_found(res: &Resource, name: &str) -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.qualified()),
        );
        e.details = Some(json!({"name": name, "group": res.group, "kind": res.plural}));
        e
    }

    /// 404 for a missing namespace.
    pub fn namespace_not_found(ns: &str) -> Self {
        let mut e = Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found"));
        e.details = Some(json!({"name": ns, "kind": "namespaces"}));
        e
    }

    /// 404 for a path the server does not serve.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 409 on create of an existing name.
    pub fn already_exists(res: &Resource, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
        );
        e.details = Some(json!({"name": name, "group": res.group, "kind": res.plural}));
        e
    }

    /// 409 on a stale resourceVersion.
    pub fn conflict(res: &Resource, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                res.qualified()
            ),
        );
        e.details = Some(json!({"name": name, "group": res.group, "kind": res.plural}));
        e
    }

    /// 409 `Conflict` with a message of its own (e.g. binding a pod that is already bound).
    pub fn conflict_message(res: &Resource, name: &str, message: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {message}",
                res.qualified()
            ),
        );
        e.details = Some(json!({"name": name, "group": res.group, "kind": res.plural}));
        e
    }

    /// 409 for server-side apply conflicts with other field managers.
    pub fn apply_conflicts(
        res: &Resource,
        name: &str,
        conflicts: &[crate::semantics::apply::Conflict],
    ) -> Self {
        let list: Vec<String> = conflicts
            .iter()
            .map(|c| format!("conflict with \"{}\": {}", c.manager, c.field))
            .collect();
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict(s): {}",
                conflicts.len(),
                list.join(", ")
            ),
        );
        e.details = Some(json!({
            "name": name, "group": res.group, "kind": res.plural,
            "causes": conflicts.iter().map(|c| json!({"type": "FieldManagerConflict", "message": format!("conflict with \"{}\"", c.manager), "field": c.field})).collect::<Vec<_>>(),
        }));
        e
    }

    /// 422 with field causes.
    pub fn invalid(res: &Resource, name: &str, causes: &[Cause]) -> Self {
        let summary: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let group_kind = if res.group.is_empty() {
            res.kind.clone()
        } else {
            format!("{}.{}", res.kind, res.group)
        };
        let message = if summary.len() == 1 {
            format!("{group_kind} \"{name}\" is invalid: {}", summary[0])
        } else {
            format!(
                "{group_kind} \"{name}\" is invalid: [{}]",
                summary.join(", ")
            )
        };
        let mut e = Self::new(422, "Invalid", message);
        e.details = Some(json!({
            "name": name, "group": res.group, "kind": res.kind,
            "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>(),
        }));
        e
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 410 for a resourceVersion older than the history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 413, for a request body or an object over its size limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    /// 429, for a client over a limit.
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(429, "TooManyRequests", message)
    }

    /// 415.
    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 503, for a backend (a kubelet) that does not answer.
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` body.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Expired { .. } => ApiError::expired(e.to_string()),
            StoreError::TooLarge { .. } => ApiError::too_large(e.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}
