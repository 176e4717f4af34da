//! Who may call the API. The embedded plane authenticates in front of it (its bearer token);
//! the standalone server (`kubevirt-controller api`) asks the cluster: a bearer token goes
//! through a TokenReview, then the verb on the subresource through a SubjectAccessReview.

use axum::http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::status::ApiError;

/// Compares secrets without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The caller of a request, as the cluster knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The user name.
    pub user: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// Its uid.
    pub uid: Option<String>,
}

/// What a request does, for authorisation.
#[derive(Clone, Debug)]
pub struct Access<'a> {
    /// `update` (PUT) or `get` (streams).
    pub verb: &'a str,
    /// `virtualmachines` or `virtualmachineinstances`.
    pub resource: &'a str,
    /// `start`, `console`, ...
    pub subresource: &'a str,
    /// The namespace.
    pub namespace: &'a str,
    /// The object's name.
    pub name: &'a str,
}

/// The bearer token of a request.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The caller named by a bearer token, through a TokenReview.
pub async fn review_token(client: &Client, token: &str) -> Result<Caller, ApiError> {
    let api: Api<TokenReview> = Api::all(client.clone());
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            ..Default::default()
        },
        ..Default::default()
    };
    let out = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| {
            ApiError::internal(format!(
                "authenticating the caller through a TokenReview: {e}"
            ))
        })?;
    let status = out.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Err(ApiError::unauthorized());
    }
    let user = status.user.unwrap_or_default();
    Ok(Caller {
        user: user.username.unwrap_or_default(),
        groups: user.groups.unwrap_or_default(),
        uid: user.uid,
    })
}

/// Whether `caller` may do `access`, through a SubjectAccessReview.
pub async fn authorize(
    client: &Client,
    caller: &Caller,
    access: &Access<'_>,
) -> Result<(), ApiError> {
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(caller.user.clone()),
            groups: Some(caller.groups.clone()),
            uid: caller.uid.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some(super::discovery::GROUP.into()),
                resource: Some(access.resource.into()),
                subresource: Some(access.subresource.into()),
                namespace: Some(access.namespace.into()),
                name: Some(access.name.into()),
                verb: Some(access.verb.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let out = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| {
            ApiError::internal(format!(
                "authorizing the request through a SubjectAccessReview: {e}"
            ))
        })?;
    if out.status.is_some_and(|s| s.allowed) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            &caller.user,
            access.verb,
            &format!(
                "resource \"{}/{}\" in API group \"{}\" in the namespace \"{}\"",
                access.resource,
                access.subresource,
                super::discovery::GROUP,
                access.namespace
            ),
        ))
    }
}
