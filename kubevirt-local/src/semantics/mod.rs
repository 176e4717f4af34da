//! The API server's object semantics, as pure functions over JSON: selectors, JSONPath for printer
//! columns, structural-schema validation and pruning, patches, and the create/update/delete rules.

pub mod apply;
pub mod builtin_defaults;
pub mod cel_names;
pub mod claims;
pub mod events;
pub mod jsonpath;
pub mod jwt;
pub mod lifecycle;
pub mod patch;
pub mod protobuf;
pub mod rbac;
pub mod rbac_bootstrap;
pub mod schema;
pub mod selector;
pub mod service_accounts;
pub mod snapshots;
pub mod storage_classes;
pub mod token;
pub mod user_token;
pub mod validation;
pub mod workloads;
