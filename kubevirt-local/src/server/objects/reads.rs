//! Where the admission of a new object reads other objects (StorageClasses, the KubeVirt CR, a
//! restore's target and snapshot): the store, or the transaction the write already runs in (a
//! server-side apply that creates). Reading the store from inside its own transaction would wait
//! forever on the store's lock.

use crate::error::ApiError;
use crate::storage::{ObjectKey, Store, Txn};
use serde_json::Value;

/// The store, or an open transaction of it.
pub(super) enum Reads<'a, 'c> {
    /// Outside any transaction.
    Store(&'a Store),
    /// Inside this transaction.
    Txn(&'a Txn<'c>),
}

impl Reads<'_, '_> {
    /// One object.
    pub(super) fn get(&self, key: &ObjectKey) -> Result<Option<Value>, ApiError> {
        Ok(match self {
            Reads::Store(s) => s.get(key)?,
            Reads::Txn(t) => t.get(key)?,
        })
    }

    /// Every object of `resource` (in `namespace` if given).
    pub(super) fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        Ok(match self {
            Reads::Store(s) => s.list(resource, namespace)?.0,
            Reads::Txn(t) => t
                .list(resource, namespace)?
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
        })
    }
}
