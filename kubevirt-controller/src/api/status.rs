//! Errors as the API answers them: a `metav1.Status` with upstream's reason and wording.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// One failed request, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The HTTP status.
    pub code: u16,
    /// The `metav1.StatusReason` (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// What the user reads.
    pub message: String,
}

impl ApiError {
    /// 404 `<resource>.kubevirt.io "<name>" not found`, as upstream's NewNotFound words it.
    pub fn not_found(resource: &str, name: &str) -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: format!("{resource}.kubevirt.io \"{name}\" not found"),
        }
    }

    /// 409 `Operation cannot be fulfilled on <resource>.kubevirt.io "<name>": <why>`.
    pub fn conflict(resource: &str, name: &str, why: impl std::fmt::Display) -> Self {
        Self {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {resource}.kubevirt.io \"{name}\": {why}"
            ),
        }
    }

    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
        }
    }

    /// 404 for a path this API does not serve.
    pub fn no_route() -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
        }
    }

    /// 500 with `message`.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self {
            code: 500,
            reason: "InternalError",
            message: format!("Internal error occurred: {message}"),
        }
    }

    /// 401 for a caller that presented no valid credentials.
    pub fn unauthorized() -> Self {
        Self {
            code: 401,
            reason: "Unauthorized",
            message: "Unauthorized".into(),
        }
    }

    /// 403 for a caller the cluster does not allow `verb` on `what`.
    pub fn forbidden(user: &str, verb: &str, what: &str) -> Self {
        Self {
            code: 403,
            reason: "Forbidden",
            message: format!("User \"{user}\" cannot {verb} {what}"),
        }
    }

    /// The error of a failed API server request, kept as the server said it.
    pub fn from_kube(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => Self {
                code: s.code,
                reason: match s.reason.as_str() {
                    "NotFound" => "NotFound",
                    "Conflict" => "Conflict",
                    "Invalid" => "Invalid",
                    "Forbidden" => "Forbidden",
                    "BadRequest" => "BadRequest",
                    _ => "InternalError",
                },
                message: s.message,
            },
            other => Self::internal(other),
        }
    }

    /// The `metav1.Status` body.
    pub fn status(&self) -> serde_json::Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = Response::new(axum::body::Body::from(self.status().to_string()));
        *r.status_mut() =
            StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_and_conflict_read_as_upstream_writes_them() {
        let e = ApiError::not_found("virtualmachine", "nosuchvm");
        assert_eq!(
            e.to_string(),
            "virtualmachine.kubevirt.io \"nosuchvm\" not found"
        );
        assert_eq!(e.status()["reason"], "NotFound");
        let e = ApiError::conflict("virtualmachine", "vm1", "VM is already running");
        assert_eq!(
            e.to_string(),
            "Operation cannot be fulfilled on virtualmachine.kubevirt.io \"vm1\": VM is already running"
        );
        assert_eq!(e.status()["code"], 409);
    }
}
