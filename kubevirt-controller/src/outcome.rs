//! How a controller's sync went, as one line for its caller's log.

use kube::Resource;
use kube::runtime::controller::{Action, Error};
use kube::runtime::reflector::ObjectRef;

/// `Ok("namespace/name")` for a sync done, `Err(message)` for a failure, `None` for what is
/// not worth a line (a requeued object that was deleted meanwhile).
pub(crate) fn describe<K, E1, E2>(
    r: Result<(ObjectRef<K>, Action), Error<E1, E2>>,
) -> Option<Result<String, String>>
where
    K: Resource,
    E1: std::error::Error + 'static,
    E2: std::error::Error + 'static,
{
    match r {
        Ok((obj, _)) => Some(Ok(format!(
            "{}/{}",
            obj.namespace.unwrap_or_default(),
            obj.name
        ))),
        Err(Error::ObjectNotFound(_)) => None,
        Err(e) => Some(Err(e.to_string())),
    }
}
